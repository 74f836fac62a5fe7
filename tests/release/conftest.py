"""A tiny release made in a temporary directory: a real (untrained) world model and thinker, their
manifest, and the settings of a small planner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from release_helpers import make_release  # noqa: E402

from thinkjepa.release import Release  # noqa: E402
from thinkjepa.thinker.checkpoint import save_thinker, world_model_fingerprint  # noqa: E402
from thinkjepa.thinker.head import PyramidLatentHead  # noqa: E402
from thinkjepa.thinker.thinker import Thinker  # noqa: E402
from thinkjepa.thinker.vlm import build_tiny_vlm  # noqa: E402
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, save_world_model  # noqa: E402


@pytest.fixture(scope="session")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    """A saved tiny world model and a thinker trained against it (untrained weights; the files are real)."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    wm = JEPA(EncoderConfig(image_size=88, patch_size=22, latent_dim=16, embed_dim=32, depth=1, num_heads=2),
              PredictorConfig(hidden_dim=32, depth=1)).eval().requires_grad_(False)
    wm_dir = save_world_model(wm, root / "world_model")
    model, processor = build_tiny_vlm("idefics3")
    head = PyramidLatentHead([-1, 1], hidden_size=64, latent_dim=wm.latent_dim, residual=True)
    thinker = save_thinker(Thinker(model, processor, head, world_model=wm), root / "thinker",
                           world_model_fingerprint=world_model_fingerprint(wm))
    return Path(wm_dir), Path(thinker)


@pytest.fixture
def release(tmp_path, parts) -> Release:
    return make_release(tmp_path / "releases", parts)

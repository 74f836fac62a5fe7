"""Fixtures for the thinker tests: a tiny saved world model and a tiny bot dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(1)

from thinker_helpers import IMAGE_SIZE, tiny_world_model  # noqa: E402

from thinkjepa.data.collect import collect  # noqa: E402
from thinkjepa.worldmodel import JEPA, save_world_model  # noqa: E402


@pytest.fixture(scope="session")
def world_model() -> JEPA:
    return tiny_world_model()


@pytest.fixture(scope="session")
def world_model_dir(tmp_path_factory: pytest.TempPathFactory, world_model: JEPA) -> Path:
    return save_world_model(world_model, tmp_path_factory.mktemp("wm") / "world_model")


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bot episodes on two one-room levels: 4 kept episodes per level at most, 88 px frames."""
    out = tmp_path_factory.mktemp("data") / "babyai"
    return collect(
        ["BabyAI-GoToLocal-v0", "BabyAI-GoToRedBallGrey-v0"], 4, out, image_size=IMAGE_SIZE, epsilon=0.1
    )

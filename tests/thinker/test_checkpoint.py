"""Thinker checkpoint directories: round trip in a fresh process, world-model checks, atomic writes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from thinker_helpers import KINDS, frames, tiny_thinker, tiny_world_model

from thinkjepa.thinker.checkpoint import load_thinker, save_thinker, world_model_fingerprint

ROOT = Path(__file__).resolve().parents[2]
MISSIONS = ["go to the red ball", "open a door, then pick up the key"]


def _trained_thinker(kind: str, world_model):
    thinker = tiny_thinker(kind, world_model)
    with torch.no_grad():  # stand in for training: move every trained weight off its init
        for p in thinker.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return thinker.eval()


def test_round_trip_in_a_fresh_process_gives_identical_latents(
    world_model, world_model_dir, tmp_path
) -> None:
    paths, latents = {}, {}
    for kind in KINDS:
        thinker = _trained_thinker(kind, world_model)
        latents[kind] = thinker.propose(frames(2), MISSIONS)
        paths[kind] = str(
            save_thinker(thinker, tmp_path / kind, world_model_fingerprint=world_model_fingerprint(world_model))
        )
        assert sorted(p.name for p in Path(paths[kind]).iterdir()) == [
            "adapter",
            "base",
            "config.json",
            "processor",
            "trained.safetensors",
        ]
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from thinker_helpers import frames
        from thinkjepa.thinker.checkpoint import load_thinker
        from thinkjepa.worldmodel import load_world_model
        wm = load_world_model({str(world_model_dir)!r})
        out = {{kind: load_thinker(path, wm).propose(frames(2), {MISSIONS!r}) for kind, path in {paths!r}.items()}}
        torch.save(out, {str(tmp_path / "z.pt")!r})
    """)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, capture_output=True)
    reloaded = torch.load(tmp_path / "z.pt")
    for kind, z in latents.items():
        assert torch.equal(reloaded[kind], z), kind


def test_other_world_models_are_refused_naming_both(world_model, tmp_path) -> None:
    path = save_thinker(
        _trained_thinker("idefics3", world_model),
        tmp_path / "t",
        world_model_fingerprint=world_model_fingerprint(world_model),
    )
    other = tiny_world_model(seed=1)
    with pytest.raises(ValueError, match=f"{world_model_fingerprint(other)}.*{world_model_fingerprint(world_model)}"):
        load_thinker(path, other)
    # A refit predictor (stage 2) keeps the latent space: the thinker still fits; a changed encoder does not.
    refit = copy.deepcopy(world_model)
    torch.nn.init.normal_(refit.predictor.out[1].weight)
    assert load_thinker(path, refit).world_model is refit
    moved = copy.deepcopy(world_model)
    torch.nn.init.normal_(moved.target_encoder.proj.weight)
    with pytest.raises(ValueError, match="differs"):
        load_thinker(path, moved)
    with pytest.raises(ValueError, match="latent_dim=8.*latent_dim=16"):
        load_thinker(path, tiny_world_model(latent_dim=8))
    assert load_thinker(path).world_model is None  # no world model: nothing to check, attach one later


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        load_thinker(tmp_path / "nothing-here")


def test_overwrite_is_atomic_and_leaves_no_temporaries(world_model, tmp_path) -> None:
    thinker = _trained_thinker("qwen2_vl", world_model)
    for run in ("first", "second"):
        save_thinker(thinker, tmp_path / "t", world_model_fingerprint="f" * 16, run_config={"run": run})
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["run"] == {"run": "second"} and config["world_model"] == {
        "fingerprint": "f" * 16,
        "latent_dim": 16,
    }
    assert config["trained_vlm_parameters"] and all("merger" in n for n in config["trained_vlm_parameters"])

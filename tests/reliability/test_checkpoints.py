"""Checkpoints from strangers and crashes: no code runs on load, nothing half-loads, nothing truncates."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from thinkjepa.checkpoint import (
    CheckpointError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    atomic_torch_save,
    atomic_write_text,
    load_state_dict_strict,
    safe_torch_load,
)
from thinkjepa.train.checkpoint_io import AtomicCheckpointIO
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, load_world_model, save_world_model

ENC = EncoderConfig(image_size=32, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
PRED = PredictorConfig(hidden_dim=32, depth=1)


class Payload:
    """Unpickling this runs ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload(str(marker))}, f, pickle_module=pickle)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(malicious):
    path, marker = malicious
    for load in (safe_torch_load, AtomicCheckpointIO().load_checkpoint, load_world_model):
        with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.ckpt.*could run code"):
            load(path)
    assert not marker.exists()


def test_truncated_lightning_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.randn(64, 64)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.ckpt is truncated or corrupt"):
        safe_torch_load(path)


def test_truncated_and_corrupt_safetensors_are_named(tmp_path):
    save_world_model(JEPA(ENC, PRED), tmp_path / "wm")
    weights = tmp_path / "wm" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or corrupt"):
        load_world_model(tmp_path / "wm")
    (tmp_path / "wm" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_world_model(tmp_path / "wm")


def test_flipped_weights_fail_the_fingerprint(tmp_path):
    from safetensors.torch import load_file, save_file

    save_world_model(JEPA(ENC, PRED), tmp_path / "wm")
    weights = tmp_path / "wm" / "model.safetensors"
    state = load_file(str(weights))
    state["predictor.inp.bias"] += 1.0
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="do not match the fingerprint"):
        load_world_model(tmp_path / "wm")


def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no world-model checkpoint at .*nowhere"):
        load_world_model(tmp_path / "nowhere")
    (tmp_path / "wm").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing .*config\.json"):
        load_world_model(tmp_path / "wm")


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("crash in the middle of writing")


def test_a_crash_mid_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="crash in the middle"):
        atomic_torch_save({"step": 2, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert safe_torch_load(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_atomic_text_creates_its_directory_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "new" / "dir" / "results.json"
    assert atomic_write_text(path, '{"a": 1}') == path
    atomic_write_text(path, '{"a": 2}')
    assert path.read_text() == '{"a": 2}'
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_state_dict_mismatch_lists_every_key_and_shape():
    small, other = JEPA(ENC, PRED), JEPA(EncoderConfig(**{**ENC.__dict__, "latent_dim": 8}), PRED)
    state = dict(small.state_dict())
    state["bogus.weight"] = torch.zeros(2)
    del state["predictor.inp.bias"]
    with pytest.raises(StateDictMismatchError) as err:
        load_state_dict_strict(other, state, "ckpt.pt")
    msg = str(err.value)
    assert "ckpt.pt does not match the JEPA architecture" in msg
    assert "missing key predictor.inp.bias" in msg and "unexpected key bogus.weight (shape (2,))" in msg
    assert "shape mismatch at encoder.proj.weight: checkpoint (16," in msg


def test_atomic_directory_keeps_the_old_directory_when_a_write_fails_and_replaces_it_when_one_succeeds(tmp_path):
    from thinkjepa.checkpoint import atomic_directory

    target = tmp_path / "export"
    with atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), atomic_directory(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise OSError("disk full")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert (target / "weights.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary sibling left behind
    with atomic_directory(target) as tmp:
        (tmp / "other.bin").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["other.bin"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]

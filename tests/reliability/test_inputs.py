"""Bad input: each case fails early with a message naming what was wrong, and loses nothing."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from thinkjepa.cli import main
from thinkjepa.data.episodes import EpisodeFileError
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.spaces import DiscreteSpace
from thinkjepa.policy import FlatPolicy
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes/wm/babyai-tiny.yaml")


def fit_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--config", TINY, f"--data.init_args.root={data}", "--data.init_args.batch_size=4",
            f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", *extra]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("--model.init_args.encoder.laten_dim=3", "laten_dim"),  # mistyped key
        ("--model.init_args.encoder.latent_dim=abc", "latent_dim"),  # wrong type
        ("--trainer.max_stepz=3", "max_stepz"),
        ("--model.init_args.regularizer.class_path=thinkjepa.worldmodel.regularizers.NoSuchReg", "NoSuchReg"),
    ],
)
def test_bad_recipe_values_fail_before_compute(babyai_dataset, tmp_path, capsys, override, named):
    with pytest.raises(SystemExit):
        main([*fit_args(babyai_dataset, tmp_path), override])
    assert named in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(EpisodeFileError, match=str(tmp_path / "nope")):
        main(fit_args(tmp_path / "nope", tmp_path))


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_damaged_episode_file_is_named_and_the_dataset_left_as_it_was(babyai_dataset, tmp_path, damage):
    data = tmp_path / "data"
    shutil.copytree(babyai_dataset, data)
    frames = data / "frames.npy"
    if damage == "truncate":
        frames.write_bytes(frames.read_bytes()[:1000])
    elif damage == "delete":
        frames.unlink()
    else:
        frames.write_bytes(b"\x00" * 4096)
    before = sorted(p.name for p in data.iterdir())
    with pytest.raises(EpisodeFileError, match=r"frames\.npy"):
        main(fit_args(data, tmp_path / "run"))
    assert sorted(p.name for p in data.iterdir()) == before
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_non_finite_loss_stops_with_step_and_keeps_the_last_good_checkpoint(babyai_dataset, tmp_path, monkeypatch):
    original = JEPA.loss

    def poisoned(self, frames, actions, objective):
        out = original(self, frames, actions, objective)
        if self.training and poisoned.calls >= 3:
            out["loss"] = out["loss"] * float("nan")
        poisoned.calls += 1
        return out

    poisoned.calls = 0
    monkeypatch.setattr(JEPA, "loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 3 .* the last good checkpoint, "
                                                  r".*last\.ckpt, is kept"):
        main([*fit_args(babyai_dataset, tmp_path, "--trainer.callbacks.init_args.every_n_train_steps=2"),
              "--trainer.max_steps=10"])
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_collapse_is_warned_about_at_the_default_threshold_and_spread_latents_are_not(babyai_dataset, tmp_path,
                                                                                      monkeypatch):
    """The tiny encoder's latents at step 3 have a mean std of ~0.04 (just under the default 0.05): scaled by 100
    they are well spread and nothing is said; scaled by 1e-4 every frame is one point and the warning names it."""
    args = ["--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=3",
            "--model.init_args.optim.warmup_steps=1"]
    original = JEPA.encode
    monkeypatch.setattr(JEPA, "encode", lambda self, images: 100 * original(self, images))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main([*fit_args(babyai_dataset, tmp_path / "spread", *args)])
    assert not [str(w.message) for w in caught if "representation collapse" in str(w.message)]

    monkeypatch.setattr(JEPA, "encode", lambda self, images: 1e-4 * original(self, images))
    with pytest.warns(UserWarning, match=r"representation collapse suspected at step 3: mean per-dimension std"):
        main([*fit_args(babyai_dataset, tmp_path / "collapsed", *args)])


@pytest.fixture(scope="module")
def wm() -> JEPA:
    enc = EncoderConfig(image_size=64, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    return JEPA(enc, PredictorConfig(hidden_dim=32, depth=1)).eval()


def test_wrong_image_size_at_evaluation_is_named(wm):
    policy = FlatPolicy(wm, CEMPlanner(horizon=2, num_samples=8, iterations=1, num_elites=2), DiscreteSpace(7))
    with pytest.raises(ValueError, match=r"image size \(88, 88\) does not match the encoder's image_size=64"):
        policy.reset(np.zeros((1, 88, 88, 3), dtype=np.uint8))


def test_wrong_action_space_at_evaluation_is_named(wm):
    with pytest.raises(ValueError, match="9 discrete actions but the world model was trained with 7"):
        FlatPolicy(wm, CEMPlanner(horizon=2, num_samples=8, iterations=1, num_elites=2), DiscreteSpace(9))


def test_empty_dataset_is_refused(tmp_path):
    from thinkjepa.data.writer import EpisodeWriter

    with pytest.raises(ValueError, match="empty"), EpisodeWriter(tmp_path / "empty"):
        pass
    assert not (tmp_path / "empty").exists()

"""``thinkjepa score-thinker``: a saved thinker's held-out metrics, level by level."""

from __future__ import annotations

import json

import pytest
from thinker_helpers import tiny_thinker

from thinkjepa.thinker.checkpoint import save_thinker, world_model_fingerprint
from thinkjepa.thinker.score import score_thinker
from thinkjepa.train.thinker_data import ThinkerDataModule

LEVELS = ["BabyAI-GoToLocal-v0", "BabyAI-GoToRedBallGrey-v0"]


@pytest.fixture(scope="module")
def untrained_thinker(tmp_path_factory, world_model):
    thinker = tiny_thinker("idefics3", world_model)  # residual head, last layer zero: z* = z_t exactly
    path = tmp_path_factory.mktemp("thinker") / "thinker"
    return save_thinker(thinker, path, world_model_fingerprint=world_model_fingerprint(world_model))


def test_scores_every_level_on_the_training_split(
    untrained_thinker, world_model_dir, dataset_dir, tmp_path
) -> None:
    out = tmp_path / "score.json"
    results = score_thinker(
        str(untrained_thinker), str(world_model_dir), data=str(dataset_dir), val_fraction=0.5, out=str(out)
    )
    assert sorted(results) == LEVELS
    for level, r in results.items():
        dm = ThinkerDataModule(root=str(dataset_dir), val_fraction=0.5, val_levels=[level])
        dm.setup()
        assert r["samples"] == len(dm.val_set) > 0 and r["episodes"] == len(dm.val_set.episodes)
        # An untrained residual head proposes the current latent, with or without the instruction.
        assert r["mse"] == pytest.approx(r["mse_copy"]) == pytest.approx(r["mse_blind"])
        assert r["top1"] == r["top1_copy"] == r["top1_blind"]
        assert r["top1_minus_blind"] == r["top1_minus_copy"] == 0.0
        assert r["top1_minus_blind_ci95"] == r["top1_minus_copy_ci95"] == [0.0, 0.0]
        assert r["beats_copy"] == 0.0
    assert json.loads(out.read_text())["levels"] == results


def test_unknown_level_is_named(untrained_thinker, world_model_dir, dataset_dir) -> None:
    with pytest.raises(ValueError, match="BabyAI-GoTo-v0.*BabyAI-GoToLocal-v0"):
        score_thinker(
            str(untrained_thinker), str(world_model_dir), data=str(dataset_dir), levels=["BabyAI-GoTo-v0"]
        )

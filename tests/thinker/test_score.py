"""``thinkjepa score-thinker``: a saved thinker's held-out metrics, level by level."""

from __future__ import annotations

import json

import pytest
import torch
from thinker_helpers import tiny_thinker

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.thinker.checkpoint import save_thinker, world_model_fingerprint
from thinkjepa.thinker.data import SubgoalDataset, split_episodes
from thinkjepa.thinker.score import score_thinker
from thinkjepa.train.thinker_data import ThinkerDataModule
from thinkjepa.worldmodel import load_world_model

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


class _Oracle:
    """A thinker that proposes each held-out sample's true subgoal latent, and with the neutral instruction the
    current latent: the scorer must then find it perfect, and better than both ablations."""

    def __init__(self, answers: dict[tuple[bytes, str], torch.Tensor]) -> None:
        self.answers = answers

    def eval(self) -> _Oracle:
        return self

    def __call__(self, images: torch.Tensor, missions: list[str], z_current: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.answers.get((img.numpy().tobytes(), m), z) for img, m, z in
                            zip(images, missions, z_current, strict=True)])


def test_a_thinker_that_knows_the_subgoal_scores_perfect_and_beats_both_ablations(
    untrained_thinker, world_model, world_model_dir, dataset_dir, monkeypatch
) -> None:
    import thinkjepa.thinker.score as score

    store = EpisodeStore(str(dataset_dir))
    _, held_out = split_episodes([store.meta(i).level for i in range(len(store))], 0.5, 0)
    ds = SubgoalDataset(store, held_out, "waypoint", 4)
    wm = load_world_model(world_model_dir)
    answers: dict[tuple[bytes, str], torch.Tensor] = {}
    with torch.no_grad():
        for k in range(len(ds)):  # a frame seen twice with one mission (a step that changed nothing) has one answer
            key = (ds.current_image(k).tobytes(), store.meta(ds.samples[k][0]).mission)
            target = wm.target_encode(torch.from_numpy(ds.subgoal_image(k).copy())[None])[0]
            assert key not in answers or torch.equal(answers[key], target)
            answers[key] = target
    monkeypatch.setattr(score, "load_thinker", lambda path, world_model, **kw: _Oracle(answers))
    results = score_thinker(str(untrained_thinker), str(world_model_dir), data=str(dataset_dir), val_fraction=0.5)
    for level, r in results.items():
        assert r["mse"] == pytest.approx(0.0, abs=1e-10) and r["top1"] == 1.0, level
        assert r["mse_copy"] > 0 and r["mse_blind"] == pytest.approx(r["mse_copy"])  # neutral: the copy's answer
        assert r["top1_copy"] < 1.0 and r["top1_minus_copy"] == pytest.approx(1.0 - r["top1_copy"], abs=1e-4)
        low, high = r["top1_minus_copy_ci95"]
        assert 0 < low <= r["top1_minus_copy"] <= high

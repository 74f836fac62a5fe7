"""Retrieval metrics."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.thinker.metrics import SubgoalMetrics, SubgoalRetrieval, episode_bootstrap_difference


def test_retrieval_counts_the_nearest_candidate_and_ties_as_hits() -> None:
    frames = torch.eye(4)  # 4 candidate latents of one episode
    target = frames[[2, 2, 3]]
    pred = torch.stack([frames[2] + 0.1, frames[1], frames[3]])  # near the truth, near a distractor, exact
    metric = SubgoalRetrieval()
    metric.update(pred, target, [frames, frames, torch.cat([frames, frames[3:]])])  # duplicate frame: a tie
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_subgoal_metrics_report_thinker_and_both_baselines() -> None:
    frames = torch.randn(5, 8)
    target = frames[[1, 3]]
    metrics = SubgoalMetrics()
    metrics.update(target.clone(), frames[[0, 0]], frames[[4, 4]], target, [frames, frames])
    out = metrics.compute()
    assert set(out) == {
        "mse",
        "mse_copy",
        "mse_blind",
        "cosine",
        "beats_copy",
        "top1",
        "top1_copy",
        "top1_blind",
    }
    assert (
        out["top1"] == 1
        and out["mse"] == 0
        and out["top1_copy"] == 0
        and torch.isclose(out["cosine"], torch.tensor(1.0))
    )


def test_bootstrap_of_the_margin_resamples_whole_episodes() -> None:
    # Episode 7: the thinker hits all 10 frames, the baseline none; episode 9: both hit all 10.
    episodes = [7] * 10 + [9] * 10
    hits, baseline = torch.ones(20, dtype=torch.bool), torch.tensor([False] * 10 + [True] * 10)
    diff, low, high = episode_bootstrap_difference(hits, baseline, episodes, resamples=4000)
    assert diff == pytest.approx(0.5)
    # Two episodes: a draw is (7, 7), (7, 9) or (9, 9) -> margin 1, 0.5 or 0. Resampling single frames would
    # instead give a narrow interval around 0.5.
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)
    same = episode_bootstrap_difference(hits, hits, episodes)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same non-zero length"):
        episode_bootstrap_difference(hits, baseline[:5], episodes)

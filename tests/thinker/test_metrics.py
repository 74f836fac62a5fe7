"""Retrieval metrics."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.thinker.metrics import SubgoalMetrics, SubgoalRetrieval


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

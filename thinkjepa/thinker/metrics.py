"""Validation metrics of the thinker, and of the two baselines it has to beat.

* ``mse`` / ``cosine``: latent error of z* against the target-encoder latent of the subgoal frame.
* ``top1``: retrieval. Among all frames of the sample's episode (plus its waypoint renders for the
  ``waypoint`` source, plus the target itself), is the nearest one to z* (squared L2, the planner's
  energy) the true subgoal? Identical frames have identical latents, so ties count as hits.
* ``beats_copy``: share of samples where z* is nearer the target than the current latent is, i.e. where
  planning toward z* lowers the true subgoal energy at all (a residual head's small early steps show
  here long before they change the nearest neighbour).
* the same for ``copy`` (z* = the current frame's latent: "stay here") and ``blind`` (the thinker with
  every mission replaced by one neutral string): if ``top1`` does not beat ``top1_blind``, the thinker is not
  using the instruction; if it does not beat ``top1_copy``, it is not proposing anything useful.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import CosineSimilarity, MeanMetric, MeanSquaredError, Metric


def retrieval_hits(pred: torch.Tensor, target: torch.Tensor, candidates: Sequence[torch.Tensor]) -> torch.Tensor:
    """``bool (B,)``: is the true subgoal latent at least as near ``pred`` (squared L2) as every candidate?

    Args:
        pred: ``(B, D)`` proposed latents.
        target: ``(B, D)`` true subgoal latents.
        candidates: B tensors ``(N_i, D)``: the distractors of each sample (may include the target).
    """
    if pred.shape != target.shape or len(candidates) != pred.shape[0]:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and {len(candidates)} candidate sets disagree"
        )
    d_true = (pred - target).pow(2).sum(-1)  # (B,)
    d_best = torch.stack([(cand.to(pred) - pred[i]).pow(2).sum(-1).min() for i, cand in enumerate(candidates)])
    return d_true <= d_best


def episode_bootstrap_difference(
    hits: torch.Tensor, baseline_hits: torch.Tensor, episodes: Sequence[int], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Paired difference of two hit rates on the same samples, with a 95 % interval that resamples *episodes*.

    Frames of one episode are far from independent, so the interval redraws whole episodes (with
    replacement) and recomputes ``mean(hits) - mean(baseline_hits)`` over their samples.

    Returns:
        ``(difference, low, high)``.
    """
    hits, baseline_hits = hits.float().cpu(), baseline_hits.float().cpu()
    if hits.shape != baseline_hits.shape or hits.ndim != 1 or len(episodes) != len(hits) or not len(hits):
        raise ValueError(
            f"hits {tuple(hits.shape)}, baseline_hits {tuple(baseline_hits.shape)} and {len(episodes)} episode ids "
            "must be the same non-zero length"
        )
    ids, groups = torch.unique(torch.as_tensor(list(episodes)), return_inverse=True)
    per_episode = torch.zeros(len(ids), 3).index_add_(
        0, groups, torch.stack([hits, baseline_hits, torch.ones_like(hits)], dim=1)
    )  # (E, [hits, baseline hits, samples])
    generator = torch.Generator().manual_seed(seed)
    draws = per_episode[torch.randint(len(ids), (resamples, len(ids)), generator=generator)].sum(1)  # (R, 3)
    diffs = (draws[:, 0] - draws[:, 1]) / draws[:, 2]
    low, high = torch.quantile(diffs, torch.tensor([0.025, 0.975])).tolist()
    return float(hits.mean() - baseline_hits.mean()), low, high


class SubgoalRetrieval(Metric):
    """Top-1 retrieval accuracy of the true subgoal latent among per-sample candidate latents."""

    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, candidates: Sequence[torch.Tensor]) -> None:
        """Score a batch.

        Args:
            pred: ``(B, D)`` proposed latents.
            target: ``(B, D)`` true subgoal latents.
            candidates: B tensors ``(N_i, D)``: the distractors of each sample (may include the target).
        """
        if pred.shape != target.shape or len(candidates) != pred.shape[0]:
            raise ValueError(
                f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and {len(candidates)} candidate sets disagree"
            )
        self.hits += retrieval_hits(pred, target, candidates).sum()
        self.total += pred.shape[0]

    def compute(self) -> torch.Tensor:
        return self.hits / self.total.clamp(min=1)


class SubgoalMetrics(nn.Module):
    """Latent error and retrieval of the thinker, the copy baseline and the language-blind thinker."""

    def __init__(self) -> None:
        super().__init__()
        self.mse, self.mse_copy, self.mse_blind = MeanSquaredError(), MeanSquaredError(), MeanSquaredError()
        self.cosine = CosineSimilarity(reduction="mean")
        self.beats_copy = MeanMetric()
        self.top1, self.top1_copy, self.top1_blind = (SubgoalRetrieval() for _ in range(3))

    def update(
        self,
        pred: torch.Tensor,
        copy: torch.Tensor,
        blind: torch.Tensor,
        target: torch.Tensor,
        candidates: Sequence[torch.Tensor],
    ) -> None:
        """Add a batch: ``(B, D)`` thinker, copy and blind proposals, ``(B, D)`` targets, B candidate sets."""
        for name, z in (("", pred), ("_copy", copy), ("_blind", blind)):
            getattr(self, f"mse{name}").update(z, target)
            getattr(self, f"top1{name}").update(z, target, candidates)
        self.cosine.update(pred, target)
        self.beats_copy.update(((pred - target).pow(2).sum(-1) < (copy - target).pow(2).sum(-1)).float())

    def compute(self) -> dict[str, torch.Tensor]:
        """``{mse, mse_copy, mse_blind, cosine, beats_copy, top1, top1_copy, top1_blind}``."""
        return {name: m.compute() for name, m in self.named_children()}

    def reset(self) -> None:
        for m in self.children():
            m.reset()

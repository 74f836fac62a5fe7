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
        d_true = (pred - target).pow(2).sum(-1)  # (B,)
        for i, cand in enumerate(candidates):
            d_best = (cand.to(pred) - pred[i]).pow(2).sum(-1).min()
            self.hits += (d_true[i] <= d_best).float()
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

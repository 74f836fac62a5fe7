"""Planning costs over predicted latent trajectories.

A cost maps ``z_traj (B, N, H, D)`` (``N`` candidate rollouts of each of ``B`` episodes) to ``(B, N)``,
lower is better (:data:`thinkjepa.protocols.CostFn`). :class:`GoalCost` is the one the agent uses:
the distance of the rollout to a goal latent (a thinker subgoal or an encoded goal image), by default
at the final step only, optionally weighted over intermediate steps (reaching the goal early then
drifting away is penalised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Metric = Literal["l2", "sq_l2", "cosine"] | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_METRICS = ("l2", "sq_l2", "cosine")


def latent_distance(z: torch.Tensor, goal: torch.Tensor, metric: Metric = "l2") -> torch.Tensor:
    """Distance between latents over their last dim.

    Args:
        z: ``(..., D)`` latents.
        goal: ``(..., D)`` goal latents, broadcastable against ``z``.
        metric: ``"l2"`` (Euclidean), ``"sq_l2"`` (squared Euclidean: smooth at zero, which gradient
            planning likes), ``"cosine"`` (``1 - cos``: ignores latent norm), or a learned distance
            ``metric(z, goal) -> (...)`` such as :class:`~thinkjepa.train.distance.GoalDistance`.

    Returns:
        ``(...)`` distances.
    """
    if callable(metric):
        return metric(z, goal)
    if metric == "l2":
        return torch.linalg.vector_norm(z - goal, dim=-1)  # subgradient 0 at the goal, never NaN
    if metric == "sq_l2":
        return ((z - goal) ** 2).sum(dim=-1)
    if metric == "cosine":
        return 1 - F.cosine_similarity(z, goal, dim=-1)
    raise ValueError(f"unknown metric {metric!r}; expected one of {_METRICS}")


class GoalCost:
    """Distance of predicted latents to one goal latent per episode.

    Args:
        goal: ``(B, D)`` goal latents, one per episode (detached: planning never trains the goal).
        weights: ``"final"`` (distance at the last step), ``"all"`` (mean over all steps), ``"min"``
            (closest approach over the horizon, ties broken toward earlier steps) or a tensor of ``H``
            per-step weights.
        metric: See :func:`latent_distance`.
        step_cost: With ``weights="min"``, what each step spent before the closest approach adds. The
            default only breaks ties toward earlier steps; with a distance in *actions* (a learned
            :class:`~thinkjepa.train.distance.GoalDistance`) use 1, and ``min_h (h + d_h)`` is
            the rollout's estimated number of actions to the goal.
    """

    def __init__(
        self,
        goal: torch.Tensor,
        weights: Literal["final", "all", "min"] | torch.Tensor = "final",
        metric: Metric = "l2",
        step_cost: float = 1e-3,
    ) -> None:
        if goal.dim() != 2:
            raise ValueError(f"GoalCost: goal must be (B, D), got {tuple(goal.shape)}")
        if not callable(metric) and metric not in _METRICS:
            raise ValueError(f"GoalCost: unknown metric {metric!r}; expected one of {_METRICS}")
        if isinstance(weights, str) and weights not in ("final", "all", "min"):
            raise ValueError(f"GoalCost: weights must be 'final', 'all', 'min' or a tensor over H, got {weights!r}")
        if isinstance(weights, torch.Tensor) and weights.dim() != 1:
            raise ValueError(f"GoalCost: weights tensor must be (H,), got {tuple(weights.shape)}")
        self.goal = goal.detach()
        self.weights = weights
        self.metric = metric
        self.step_cost = step_cost

    @property
    def batch_size(self) -> int:
        """Number of episodes ``B`` this cost scores."""
        return self.goal.shape[0]

    def __call__(self, z_traj: torch.Tensor) -> torch.Tensor:
        """``z_traj (B, N, H, D)`` -> cost ``(B, N)``."""
        b, d = self.goal.shape
        if z_traj.dim() != 4 or z_traj.shape[0] != b or z_traj.shape[-1] != d:
            raise ValueError(
                f"GoalCost: z_traj must be (B, N, H, D) = ({b}, N, H, {d}) to match goal {tuple(self.goal.shape)}, "
                f"got {tuple(z_traj.shape)}"
            )
        goal = self.goal.to(z_traj.dtype)[:, None, None, :]  # (B, 1, 1, D)
        if isinstance(self.weights, str) and self.weights == "final":
            return latent_distance(z_traj[:, :, -1:], goal, self.metric).squeeze(-1)  # (B, N)
        dist = latent_distance(z_traj, goal, self.metric)  # (B, N, H)
        if isinstance(self.weights, str) and self.weights == "min":
            # Closest approach, plus what getting there costs: for tasks that end the moment the
            # goal is reached (BabyAI GoTo), where the rollout goes afterwards is moot.
            steps = torch.arange(1, dist.shape[-1] + 1, device=dist.device, dtype=dist.dtype)
            return (dist + self.step_cost * steps).min(dim=-1).values
        if isinstance(self.weights, str):
            return dist.mean(dim=-1)
        if self.weights.shape[0] != dist.shape[-1]:
            raise ValueError(
                f"GoalCost: {self.weights.shape[0]} step weights for a horizon-{dist.shape[-1]} rollout"
            )
        return dist @ self.weights.to(dist)  # (B, N)

    def select(self, index: int | slice) -> GoalCost:
        """The same cost restricted to episode(s) ``index`` (what a per-episode planner needs)."""
        rows = slice(index, index + 1) if isinstance(index, int) else index
        return GoalCost(self.goal[rows], self.weights, self.metric, self.step_cost)

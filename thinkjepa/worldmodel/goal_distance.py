"""The goal-distance head: how many actions separate a (predicted) latent from a goal latent.

The network only; :mod:`thinkjepa.train.distance` trains it (stage 3) and says why it exists. It is
exported with the world model (:mod:`thinkjepa.worldmodel.export`) and is a planning cost
(:class:`~thinkjepa.policy.mpc.PlanningCost`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistanceConfig:
    """Architecture of the goal-distance head.

    Attributes:
        hidden_dim: MLP width.
        depth: Hidden layers.
        max_distance: Largest distance class; farther pairs count as this far.
    """

    hidden_dim: int = 256
    depth: int = 3
    max_distance: int = 24


class GoalDistance(nn.Module):
    """MLP on ``[z, g, z - g, |z - g|]`` -> logits over ``0..max_distance`` actions."""

    def __init__(self, config: DistanceConfig, latent_dim: int) -> None:
        super().__init__()
        if config.depth < 1 or config.hidden_dim < 1 or config.max_distance < 1:
            raise ValueError(f"distance head needs depth, hidden_dim and max_distance >= 1, got {config}")
        self.config = config
        layers: list[nn.Module] = []
        width = 4 * latent_dim
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden_dim), nn.GELU()]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.max_distance + 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("values", torch.arange(config.max_distance + 1, dtype=torch.float32), persistent=False)

    def logits(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` latents and goals (broadcastable) -> ``(..., max_distance + 1)`` logits."""
        z, goal = torch.broadcast_tensors(z, goal)
        return self.net(torch.cat([z, goal, z - goal, (z - goal).abs()], dim=-1))

    def forward(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Expected number of actions from ``z`` to ``goal``: ``(...)``."""
        return self.logits(z, goal).softmax(dim=-1) @ self.values.to(z.dtype)

    def quantile(self, z: torch.Tensor, goal: torch.Tensor, q: float) -> torch.Tensor:
        """The ``q``-quantile of the predicted number of actions, ``(...)``, interpolated within its class (so it moves
        continuously with the distribution; a point mass at ``k`` gives ``k + q``): a head trained on how long
        recordings took between two frames predicts the spread of those durations, and a low quantile is nearer the
        shortest way than the mean."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"GoalDistance.quantile needs 0 < q < 1, got {q}")
        p = self.logits(z, goal).softmax(dim=-1)
        below = p.cumsum(dim=-1) - p  # mass of the classes before each
        return ((q - below) / p.clamp_min(1e-12)).clamp(0.0, 1.0).sum(dim=-1)

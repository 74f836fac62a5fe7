"""The seams between the world model, the planner and the thinker.

Shapes are requirements, names are what the package uses. ``L`` is the world model's latent shape;
thinkjepa's world models use a vector latent, so ``L == (D,)``.

Images crossing these seams are ``uint8`` tensors laid out ``(B, H, W, 3)`` exactly as environments
and episode files hold them; each model converts them to its own input format, so no caller has to
know a model's normalisation.

Actions:
    * discrete spaces: ``long`` indices ``(B, T)``, or ``float`` probabilities ``(B, T, K)`` (the
      relaxation the gradient planner differentiates through);
    * continuous spaces: ``float`` ``(B, T, A)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class WorldModel(Protocol):
    """What planners and policies need from a world model."""

    latent_dim: int

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Context-encode ``uint8 (B, H, W, 3)`` images to latents ``(B, D)``."""
        ...

    def target_encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode with the EMA target encoder (no gradient) to ``(B, D)``."""
        ...

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Roll the predictor out open-loop from ``z0 (B, D)`` under ``actions (B, T[, K])``.

        Returns the predicted latents ``(B, T, D)`` for steps ``1..T`` (``z0`` itself excluded).
        """
        ...


RolloutFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``rollout(z0 (M, D), actions (M, H[, K])) -> (M, H, D)``."""

CostFn = Callable[[torch.Tensor], torch.Tensor]
"""``cost(z_traj (B, N, H, D)) -> (B, N)``: lower is better."""


@runtime_checkable
class Thinker(Protocol):
    """A model that proposes the next subgoal as a world-model latent."""

    latent_dim: int

    def propose(self, images: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` images and B instructions -> subgoal latents ``(B, D)``."""
        ...

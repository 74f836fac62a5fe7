"""The optimizer every trainer uses: AdamW (no decay on biases and norms), linear warm-up, cosine decay, and
its settings (:class:`OptimConfig`, the ``optim`` key of the world-model and thinker recipes)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay.

    Attributes:
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05


def adamw_warmup_cosine(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    min_lr_ratio: float,
    total_steps: float,
) -> dict[str, Any]:
    """A Lightning ``configure_optimizers`` return value.

    Args:
        params: Parameters; those that do not require gradients are skipped.
        lr: Peak learning rate.
        weight_decay: Decay for matrices; vectors (biases, norm scales) get none.
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        total_steps: Training steps (``trainer.estimated_stepping_batches``; inf means unknown).
    """
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    total = int(total_steps) if math.isfinite(total_steps) else 10**6

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total - warmup_steps, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

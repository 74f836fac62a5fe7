"""EMA target encoder update and its momentum schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """Momentum rising from ``base`` to ``final`` along a half cosine over ``total_steps``."""
    if total_steps <= 0:
        return base
    progress = min(step / total_steps, 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target ← momentum·target + (1 − momentum)·online`` with fused foreach kernels.

    Floating buffers follow the same rule; integer buffers are copied.
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        if tb.dtype.is_floating_point:
            tb.lerp_(ob, 1.0 - momentum)
        else:
            tb.copy_(ob)

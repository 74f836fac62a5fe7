"""A convolutional router on the VLM's image-token grid: where the agent should stand next.

The VLM's image tokens learn quickly which cell holds the named object (a linear read-out per token finds it
on every held-out GoTo layout after ~1250 steps), but not which doorway leads there: the next waypoint needs
the agent's room, the target's room and the doors between, and a 4-layer language model's tokens did not
learn it (31 % of held-out waypoints with the instruction, 32 % with a neutral one, after 1500
steps). Routing is what stacked dilated convolutions over a grid do well — a per-cell network with eight of
them, seeing the whole 22 x 22 grid, found 82.75 % of GoTo waypoints from pixels and the instruction
— so the router is such a stack on the token grid, fed each token's features and its
named-object logit. It is a dense-prediction head on VLM features, in the way segmentation decoders sit on
ViT tokens: the VLM says *what* the instruction names, the router works out *how to get there*.

It needs the image tokens to form a square grid in row-major order, which the tiny VLMs with one image
(:func:`~thinkjepa.thinker.vlm.pixel_tokens`) give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RouterOptions:
    """The router's shape."""

    channels: int = 64
    """Width of every convolution."""
    depth: int = 8
    """Residual 3x3 convolutions."""
    dilated: bool = True
    """Layer ``i`` dilates by ``2 ** (i % 4)``: eight layers see 61 x 61 cells (undilated: 17 x 17)."""


class GridRouter(nn.Module):
    """Scores every image token as the next waypoint's cell and reads the heading there.

    Args:
        hidden_size: Width of the VLM tokens it reads.
        channels, depth, dilated: See :class:`RouterOptions`.
    """

    def __init__(self, hidden_size: int, channels: int = 64, depth: int = 8, dilated: bool = True) -> None:
        super().__init__()
        if channels < 1 or depth < 0:
            raise ValueError(f"router channels must be >= 1 and depth >= 0, got channels={channels}, depth={depth}")
        self.options = RouterOptions(channels, depth, dilated)
        self.inp = nn.Conv2d(hidden_size + 1, channels, 1)  # + the named-object logit
        rates = [2 ** (i % 4) if dilated else 1 for i in range(depth)]
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=r, dilation=r) for r in rates)
        self.out = nn.Conv2d(channels, 5, 1)  # waypoint logit + 4 heading logits

    def forward(
        self, tokens: torch.Tensor, object_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Route on the grid of ``N = side²`` image tokens.

        Args:
            tokens: ``(B, N, H)`` image-token features, row-major.
            object_logits: ``(B, N)`` each token's named-object logit.

        Returns:
            ``(B, N)`` waypoint logits, ``(B, N, 4)`` heading logits, ``(B, N, channels)`` features.

        Raises:
            ValueError: ``N`` is not a square number, or the shapes disagree.
        """
        b, n, h = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"GridRouter needs a square grid of image tokens, got {n} tokens per image")
        if object_logits.shape != (b, n):
            raise ValueError(f"object_logits has shape {tuple(object_logits.shape)}, expected ({b}, {n})")
        x = torch.cat([tokens, object_logits.unsqueeze(-1)], dim=-1)  # (B, N, H+1)
        x = F.gelu(self.inp(x.transpose(1, 2).reshape(b, h + 1, side, side)))
        for conv in self.convs:
            x = x + F.gelu(conv(x))
        out = self.out(x).flatten(2)  # (B, 5, N)
        return out[:, 0], out[:, 1:].transpose(1, 2), x.flatten(2).transpose(1, 2)

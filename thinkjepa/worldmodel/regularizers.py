"""Anti-collapse regularizers R(Z) on a batch of latents ``Z (N, D)``.

Both use batch statistics, so under DDP they are computed over the *global* batch: VICReg gathers
the latents from every rank with a differentiable all-gather; SIGReg only needs the empirical
characteristic function, a mean, which it all-reduces (cheaper than gathering the latents).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather, all_reduce


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Regularizer(nn.Module):
    """Base class: ``forward(z (N, D)) -> scalar`` penalty, lower = less collapsed."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class VICReg(Regularizer):
    """VICReg's variance and covariance terms (Bardes et al., 2022).

    Args:
        std_target: Hinge target for each dimension's standard deviation.
        var_weight: Weight of the variance hinge.
        cov_weight: Weight of the off-diagonal covariance penalty.
        eps: Numerical floor inside the square root.
    """

    def __init__(
        self, std_target: float = 1.0, var_weight: float = 1.0, cov_weight: float = 0.04, eps: float = 1e-4
    ) -> None:
        super().__init__()
        self.std_target, self.var_weight, self.cov_weight, self.eps = std_target, var_weight, cov_weight, eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if _distributed():
            z = torch.cat(all_gather(z.contiguous()), dim=0)
        z = z.float()
        n, d = z.shape
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + self.eps)
        var_loss = torch.relu(self.std_target - std).mean()
        cov = (z.T @ z) / max(n - 1, 1)  # (D, D)
        off_diag = cov - torch.diag(torch.diagonal(cov))
        cov_loss = off_diag.pow(2).sum() / d
        return self.var_weight * var_loss + self.cov_weight * cov_loss


class SIGReg(Regularizer):
    """Sketched isotropic Gaussian regularizer (LeJEPA, Balestriero & LeCun, 2025).

    Projects the latents on ``num_slices`` random unit directions and penalises, per direction, the
    Epps–Pulley distance between the empirical characteristic function and that of N(0, 1),
    integrated on ``num_knots`` points of [-t_max, t_max] with a Gaussian weight. The directions are
    redrawn each call from a generator seeded by a counter, so every DDP rank uses the same ones.

    Args:
        num_slices: Number of random projection directions.
        num_knots: Quadrature points for the integral over t.
        t_max: Integration range.
        seed: Base seed for the direction draws.
    """

    def __init__(self, num_slices: int = 256, num_knots: int = 17, t_max: float = 3.0, seed: int = 0) -> None:
        super().__init__()
        self.num_slices, self.seed = num_slices, seed
        t = torch.linspace(-t_max, t_max, num_knots)
        w = torch.exp(-0.5 * t**2)
        dt = t[1] - t[0]
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("weights", w * dt, persistent=False)  # Gaussian weight × trapezoid step
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        gen = torch.Generator(device="cpu").manual_seed(self.seed + int(self.calls))
        self.calls += 1
        dirs = torch.randn(d, self.num_slices, generator=gen).to(z.device)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        proj = z.float() @ dirs  # (N, S)
        tx = proj.unsqueeze(-1) * self.t  # (N, S, K)
        cos_mean, sin_mean = torch.cos(tx).mean(0), torch.sin(tx).mean(0)  # (S, K)
        total = n
        if _distributed():
            world = dist.get_world_size()
            cos_mean = all_reduce(cos_mean) / world
            sin_mean = all_reduce(sin_mean) / world
            total = n * world
        target = torch.exp(-0.5 * self.t**2)  # characteristic function of N(0, 1)
        err = (cos_mean - target) ** 2 + sin_mean**2  # (S, K)
        return (err @ self.weights).mean() * total / 100.0  # scaled so a weight of ~1 is sensible

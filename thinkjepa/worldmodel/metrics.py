"""Forecast quality and collapse diagnostics for latent world models."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ForecastRetrieval(Metric):
    """Open-loop forecast quality at several horizons.

    For each horizon h, a predicted latent ``ẑ_{t+h}`` is scored by **top-1 retrieval**: is the true
    target latent ``z̄_{t+h}`` of the same window the nearest (L2) among the true latents of every
    window in the batch? Chance is 1 / batch size, which is logged as ``chance``. Also accumulates
    the mean squared latent error. States are sums, so DDP reduction is exact.

    Args:
        horizons: Open-loop steps to score, e.g. ``(1, 4, 8)``.
    """

    full_state_update = False

    def __init__(self, horizons: tuple[int, ...] = (1, 4, 8), **kwargs) -> None:
        super().__init__(**kwargs)
        self.horizons = tuple(horizons)
        n = len(self.horizons)
        self.add_state("correct", torch.zeros(n), dist_reduce_fx="sum")
        self.add_state("sq_err", torch.zeros(n), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(n), dist_reduce_fx="sum")
        self.add_state("inv_batch", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("batches", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Args: ``pred`` and ``target`` shaped ``(B, T, D)``; step h is index ``h - 1``."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        b, t = pred.shape[:2]
        for i, h in enumerate(self.horizons):
            if h > t:
                raise ValueError(f"horizon {h} needs windows of at least {h + 1} frames, got {t + 1}")
            p, y = pred[:, h - 1].float(), target[:, h - 1].float()
            nearest = torch.cdist(p, y).argmin(dim=1)
            self.correct[i] += (nearest == torch.arange(b, device=p.device)).sum()
            self.sq_err[i] += (p - y).pow(2).mean(dim=1).sum()
            self.count[i] += b
        self.inv_batch += 1.0 / b
        self.batches += 1

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, h in enumerate(self.horizons):
            out[f"top1@{h}"] = self.correct[i] / self.count[i].clamp(min=1)
            out[f"latent_mse@{h}"] = self.sq_err[i] / self.count[i].clamp(min=1)
        out["chance"] = self.inv_batch / self.batches.clamp(min=1)
        return out


class ActionDiscrimination(Metric):
    """Does the predictor know what the action does? The number a planner depends on.

    For every step of a validation window, predict the next latent under *each* of the K actions
    and check that the action actually taken gives the prediction nearest to the true next target
    latent. Retrieval among other windows (:class:`ForecastRetrieval`) can be high for a predictor
    that ignores actions, since consecutive frames of one episode look alike; this cannot. Chance is
    about 1/K (less where actions have the same effect, e.g. ``done`` and a blocked ``forward``).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, model, z: torch.Tensor, z_next: torch.Tensor, actions: torch.Tensor) -> None:
        """``z``/``z_next`` ``(B, T, D)`` context and next target latents, ``actions`` ``(B, T)`` ids."""
        b, t, d = z.shape
        k = model.predictor.config.num_actions
        hist = model.history_windows(z).flatten(0, 1)  # (B·T, h, D)
        every = torch.arange(k, device=z.device).repeat(b * t)  # (B·T·K,)
        pred = model.predictor(hist.repeat_interleave(k, dim=0), every).view(b * t, k, d)
        dist = (pred - z_next.reshape(b * t, 1, d)).norm(dim=-1)  # (B·T, K)
        self.correct += (dist.argmin(dim=1) == actions.reshape(-1)).sum()
        self.count += b * t

    def compute(self) -> torch.Tensor:
        return self.correct / self.count.clamp(min=1)


def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the normalised singular values) of centred ``z (N, D)`` (Roy & Vetterli, 2007)."""
    z = z.float() - z.float().mean(dim=0)
    s = torch.linalg.svdvals(z)
    p = s / s.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())

"""Pose probe: how well does a latent say where the agent is, on layouts it has never seen?

A goal-reaching planner ranks imagined futures by their latent distance to the goal, so the latent
must say *where the agent is and which way it faces*, in every layout, not only in those the encoder
was trained on. Forecast retrieval (:mod:`thinkjepa.worldmodel.metrics`) cannot show this: it
compares a frame with the other frames of its own window. This probe renders every agent state
``(x, y, heading)`` of seeded BabyAI layouts through the environment's own renderer, encodes the
frames with a frozen encoder, fits a small MLP read-out of the state on some layouts and scores it
on held-out layouts. A latent whose pose is poorly decodable across layouts gives a cost that is flat
beyond a few steps — exactly the regime where flat planning fails.

    thinkjepa probe --world_model checkpoints/wm/babyai-tiny-stage2/world_model --level BabyAI-GoToLocal-v0
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.data.latents import encode_fixed_batches
from thinkjepa.data.poses import PoseFrames, pose_frames
from thinkjepa.envs.seeds import check_training_seeds

Encode = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PoseProbeResult:
    """Held-out-layout accuracy of the probe's read-out, and what guessing the commonest value gets."""

    level: str
    train_layouts: int
    val_layouts: int
    val_frames: int
    x: float
    y: float
    heading: float
    cell: float  # x and y both right
    pose: float  # x, y and heading all right
    chance_cell: float
    chance_heading: float


class _Readout(nn.Module):
    def __init__(self, dim: int, grid: tuple[int, int], hidden: int) -> None:
        super().__init__()
        self.grid = grid
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, sum(grid) + 4)
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w, h = self.grid
        out = self.net(z)
        return out[:, :w], out[:, w : w + h], out[:, w + h :]


class PoseReadout(nn.Module):
    """A fitted pose read-out: ``readout(latents) -> (N, 3)`` poses (NumPy in, NumPy out, argmax per axis), and
    :meth:`logits` for training through it (standardised as it was fitted; its own weights frozen)."""

    def __init__(self, readout: _Readout, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.readout = readout.eval().requires_grad_(False)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, heading)`` logits of latents ``z`` (N, D), differentiable in ``z``."""
        return self.readout((z - self.mean.to(z.device)) / self.std.to(z.device))

    def train(self, mode: bool = True) -> PoseReadout:  # fitted: always in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, new: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(np.asarray(new), dtype=torch.float32)
        return torch.stack([o.argmax(-1) for o in self.logits(z)], dim=1).numpy()


def fit_pose_probe(
    latents: np.ndarray,
    data: PoseFrames,
    train: np.ndarray,
    steps: int = 2000,
    hidden: int = 512,
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
) -> PoseReadout:
    """Fit the MLP read-out on the frames ``train`` (bool mask); returns it: ``readout(latents) -> (N, 3)`` poses."""
    g = torch.Generator().manual_seed(seed)
    z = torch.as_tensor(np.asarray(latents), dtype=torch.float32)
    mean, std = z[train].mean(0), z[train].std(0).clamp_min(1e-6)  # standardise on training layouts only
    z = (z - mean) / std
    target = torch.as_tensor(data.poses)
    idx = torch.as_tensor(np.flatnonzero(train))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        readout = _Readout(z.shape[1], data.grid, hidden)
    opt = torch.optim.AdamW(readout.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        b = idx[torch.randint(len(idx), (batch_size,), generator=g)]
        x, y, d = readout(z[b])
        loss = F.cross_entropy(x, target[b, 0]) + F.cross_entropy(y, target[b, 1]) + F.cross_entropy(d, target[b, 2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return PoseReadout(readout, mean, std)


def _commonest_rate(values: np.ndarray) -> float:
    _, counts = np.unique(values, axis=0, return_counts=True)
    return float(counts.max() / len(values))


def probe_pose_encoder(
    encode: Encode,
    level: str,
    image_size: int,
    train_layouts: int = 400,
    val_layouts: int = 100,
    seed: int = 5_000_000,
    steps: int = 2000,
    hidden: int = 512,
    encode_batch_size: int = 256,
) -> PoseProbeResult:
    """Render, encode, fit on ``train_layouts`` seeded layouts and score on ``val_layouts`` others."""
    if train_layouts < 1 or val_layouts < 1:
        raise ValueError(f"need at least one training and one held-out layout, got {train_layouts}, {val_layouts}")
    check_training_seeds(seed, train_layouts + val_layouts, f"the pose probe's layouts of {level}")
    data = pose_frames(level, list(range(seed, seed + train_layouts + val_layouts)), image_size)
    latents = encode_fixed_batches(encode, [data.frames], encode_batch_size)
    train = data.layout < train_layouts
    predicted = fit_pose_probe(latents, data, train, steps=steps, hidden=hidden)(latents[~train])
    truth = data.poses[~train]
    right = predicted == truth  # (V, 3)
    return PoseProbeResult(
        level=level,
        train_layouts=train_layouts,
        val_layouts=val_layouts,
        val_frames=int((~train).sum()),
        x=float(right[:, 0].mean()),
        y=float(right[:, 1].mean()),
        heading=float(right[:, 2].mean()),
        cell=float(right[:, :2].all(1).mean()),
        pose=float(right.all(1).mean()),
        chance_cell=_commonest_rate(truth[:, :2]),
        chance_heading=_commonest_rate(truth[:, 2]),
    )


def probe(
    world_model: str,
    level: str = "BabyAI-GoToLocal-v0",
    train_layouts: int = 400,
    val_layouts: int = 100,
    seed: int = 5_000_000,
    steps: int = 2000,
    hidden: int = 512,
    out: str | None = None,
    device: str = "cpu",
) -> PoseProbeResult:
    """``thinkjepa probe``: the pose probe of a world model's target encoder (what goals are encoded with).

    Args:
        world_model: World-model checkpoint (export directory or ``.ckpt``).
        level: BabyAI level whose layouts are rendered.
        train_layouts: Layouts the read-out is fit on.
        val_layouts: Held-out layouts it is scored on (seeds after the training ones).
        seed: First layout seed (default far from the collectors' and evaluation's seeds).
        steps: Read-out training steps.
        hidden: Read-out MLP width.
        out: Optional JSON file for the result.
        device: Where the encoder runs.
    """
    from thinkjepa.worldmodel.export import load_world_model

    model = load_world_model(world_model, device=device)
    result = probe_pose_encoder(
        lambda x: model.target_encode(x.to(device)), level, model.image_size,
        train_layouts, val_layouts, seed, steps, hidden,
    )
    print(
        f"{level}: pose read-out on {val_layouts} unseen layouts ({result.val_frames} frames) — "
        f"x {result.x:.1%}, y {result.y:.1%}, cell {result.cell:.1%} (chance {result.chance_cell:.1%}), "
        f"heading {result.heading:.1%} (chance {result.chance_heading:.1%}), full pose {result.pose:.1%}"
    )
    if out is not None:
        atomic_write_text(out, json.dumps({"world_model": world_model, **asdict(result)}, indent=2))
    return result

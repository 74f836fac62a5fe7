"""Bot demonstrations of seeded episodes, and the reach threshold calibrated on them.

A subgoal counts as reached when the current latent is within ``reach_threshold`` of it; the scale of
latent distances differs between world models and levels, so the threshold is measured: half the median
latent distance between consecutive frames of the BabyAI bot's demonstrations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from thinkjepa.data.collect import record_episode
from thinkjepa.envs.babyai import make_env

CALIBRATION_SEED = 9_000_000  # bot episodes that calibrate a loaded agent's reach threshold (no other use)


@dataclass
class Demo:
    """The bot's demonstration of one seeded episode."""

    seed: int
    mission: str
    success: bool
    steps: int
    goal_frame: np.ndarray | None
    frames: np.ndarray | None


def demonstrate(level: str, seed: int, image_size: int) -> Demo:
    env = make_env(level, image_size=image_size)
    try:
        rec = record_episode(env, seed, epsilon=0.0)
        if isinstance(rec, str):
            _, info = env.reset(seed=seed)
            return Demo(seed, info["mission"], False, 0, None, None)
        return Demo(seed, rec.mission, True, rec.num_steps, rec.frames[-1], rec.frames)
    finally:
        env.close()


def calibrate_reach_threshold(world_model, demos: Sequence[Demo], fraction: float = 0.5) -> float:
    """``fraction`` × the median latent distance between consecutive frames of the demonstrations."""
    steps = []
    for d in demos:
        if d.frames is not None and len(d.frames) > 1:
            z = world_model.target_encode(torch.as_tensor(d.frames[:32]))
            steps.append(torch.linalg.vector_norm(z[1:] - z[:-1], dim=-1))
    if not steps:
        raise ValueError("cannot calibrate reach_threshold: no demonstration has two frames; pass it explicitly")
    return fraction * float(torch.cat(steps).median())


@torch.no_grad()
def calibrated_threshold(world_model, level: str, episodes: int = 20, seed: int = CALIBRATION_SEED) -> float:
    """:func:`calibrate_reach_threshold` on ``episodes`` bot demonstrations of ``level`` from ``seed`` on
    (by default seeds 9,000,000+, which no training or evaluation uses)."""
    demos = [demonstrate(level, seed + i, world_model.image_size) for i in range(episodes)]
    return calibrate_reach_threshold(world_model, demos)

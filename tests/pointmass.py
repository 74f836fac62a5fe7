"""A point mass seen from above, for tests of continuous-action world models: a 4 px square on a square frame;
each step moves it by 0.25 x the 2-D action in [-1, 1]^2, clipped to the frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from thinkjepa.data.records import EpisodeRecord
from thinkjepa.data.writer import EpisodeWriter

BOX = ([-1.0, -1.0], [1.0, 1.0])


def render(pos: np.ndarray, size: int) -> np.ndarray:
    frame = np.zeros((size, size, 3), np.uint8)
    r, c = (np.clip(pos, 0, 1) * (size - 4)).round().astype(int)
    frame[r : r + 4, c : c + 4] = 255
    return frame


def episode(seed: int, steps: int = 12, size: int = 32) -> EpisodeRecord:
    rng = np.random.default_rng(seed)
    pos, frames, actions = rng.uniform(0.2, 0.8, 2), [], []
    for _ in range(steps):
        frames.append(render(pos, size))
        a = rng.uniform(-1, 1, 2).astype(np.float32)
        actions.append(a)
        pos = np.clip(pos + 0.25 * a, 0, 1)
    frames.append(render(pos, size))
    return EpisodeRecord.from_trajectory("PointMass", seed, np.stack(frames), np.stack(actions), success=True)


def write_dataset(root: Path, episodes: int = 16, steps: int = 12, size: int = 32) -> Path:
    with EpisodeWriter(root, action_box=BOX, action_names=["down", "right"]) as w:
        for seed in range(episodes):
            w.add(episode(seed, steps, size))
    return root

"""Fixed-length windows of episodes for world-model training, and the Lightning data module.

A window is ``window`` consecutive frames of one episode and the ``window - 1`` actions between them;
every start position that fits inside an episode is served (episodes shorter than the window serve
none). Train/val are split by *episode*, so no validation frame was ever seen in training; validation
may use longer windows (``val_window``) for multi-step open-loop metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from thinkjepa.data.episodes import EpisodeStore


class WindowDataset(Dataset):
    """Every ``(episode, start)`` window of ``window`` frames in the chosen episodes.

    Args:
        store: the opened dataset.
        window: frames per item (>= 2).
        episodes: indices of the episodes to serve.
        frameskip: Action blocks (continuous actions only): an item's frames are every ``frameskip``-th frame
            and each of its actions is the ``frameskip`` actions between two of them, concatenated
            (``frameskip * A`` values), as DINO-WM and LeWM plan one block of actions per predictor step.

    Items are dicts: ``frames`` uint8 ``(T, H, W, 3)`` and ``actions`` int64 ``(T - 1,)`` (float32
    ``(T - 1, frameskip * A)`` in a continuous-action dataset) with ``T == window``; ``actions[k]`` leads from
    ``frames[k]`` to ``frames[k + 1]``.
    """

    def __init__(self, store: EpisodeStore, window: int, episodes: list[int], frameskip: int = 1) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 frames, got {window}")
        if frameskip < 1 or (frameskip > 1 and store.action_box is None):
            raise ValueError(f"frameskip must be >= 1, and 1 for discrete actions; got {frameskip} "
                             f"({store.action_space} actions)")
        self.store, self.window, self.episodes, self.frameskip = store, window, list(episodes), frameskip
        self.span = (window - 1) * frameskip + 1  # stored frames an item covers
        lengths = [store.meta(e).num_frames for e in self.episodes]
        self._index = window_index(self.episodes, lengths, self.span)  # (num_windows, 2): episode, start

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        episode, start = (int(v) for v in self._index[k])
        frames = self.store.frames(episode)[start : start + self.span : self.frameskip]  # (T, H, W, 3)
        actions = np.array(self.store.actions(episode)[start : start + self.span - 1])  # (span - 1[, A])
        if self.frameskip > 1:
            actions = actions.reshape(self.window - 1, -1)  # (T - 1, frameskip * A): one block per step
        return {"frames": torch.from_numpy(np.array(frames)), "actions": torch.from_numpy(actions)}


def window_index(
    keys: Sequence[int] | np.ndarray, lengths: Sequence[int] | np.ndarray, window: int
) -> np.ndarray:
    """``int64 (num_windows, 2)``: ``(keys[e], start)`` for every window of ``window`` frames that fits in
    each sequence ``e`` of ``lengths[e]`` frames, sequence after sequence, starts ascending.

    Built with array operations, never one Python object per window (~0.5M windows in stage 2).
    """
    keys, lengths = np.asarray(keys, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    count = np.maximum(lengths - window + 1, 0)  # windows per sequence
    first_item = np.cumsum(count) - count  # item number of each sequence's first window
    starts = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(first_item, count)
    return np.stack([np.repeat(keys, count), starts], axis=1)


class EpochSampler(Sampler[int]):
    """A shuffle that is a pure function of ``(seed, epoch)`` and can start part-way through an epoch.

    This is what lets a killed run resume at the same *data position*: the data module records how
    many batches of the current epoch were consumed, and on resume the sampler regenerates the same
    permutation and skips them. Lightning calls :meth:`set_epoch` at every epoch start.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self._skip, self._skip_epoch = 0, -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, samples: int) -> None:
        """Drop the first ``samples`` indices of the current epoch (every time it is iterated)."""
        self._skip, self._skip_epoch = samples, self.epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        start = self._skip if self.epoch == self._skip_epoch else 0
        return iter(torch.randperm(self.size, generator=g)[start:].tolist())

    def __len__(self) -> int:
        return self.size


class FixedOrder(Sampler[int]):
    """One seeded permutation of ``range(size)``, the same at every iteration."""

    def __init__(self, size: int, seed: int) -> None:
        self.order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``(train, val)`` episode indices; at least one validation episode when
    ``val_fraction > 0`` and there are two or more episodes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, round(val_fraction * n))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())



"""Fixed-length windows of episodes for world-model training, and the Lightning data module.

A window is ``window`` consecutive frames of one episode and the ``window - 1`` actions between them;
every start position that fits inside an episode is served (episodes shorter than the window serve
none). Train/val are split by *episode*, so no validation frame was ever seen in training; validation
may use longer windows (``val_window``) for multi-step open-loop metrics.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from thinkjepa.data.episodes import EpisodeStore


class WindowDataset(Dataset):
    """Every ``(episode, start)`` window of ``window`` frames in the chosen episodes.

    Args:
        store: the opened dataset.
        window: frames per item (>= 2).
        episodes: indices of the episodes to serve.

    Items are dicts: ``frames`` uint8 ``(T, H, W, 3)`` and ``actions`` int64 ``(T - 1,)`` with
    ``T == window``; ``actions[k]`` leads from ``frames[k]`` to ``frames[k + 1]``.
    """

    def __init__(self, store: EpisodeStore, window: int, episodes: list[int]) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 frames, got {window}")
        self.store, self.window, self.episodes = store, window, list(episodes)
        lengths = [store.meta(e).num_frames for e in self.episodes]
        self._index = window_index(self.episodes, lengths, window)  # (num_windows, 2): episode, start

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        episode, start = (int(v) for v in self._index[k])
        frames = self.store.frames(episode)[start : start + self.window]  # (T, H, W, 3) memmap view
        actions = self.store.actions(episode)[start : start + self.window - 1]  # (T-1,)
        return {"frames": torch.from_numpy(np.array(frames)), "actions": torch.from_numpy(np.array(actions))}


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


class ResumableWindows(L.LightningDataModule):
    """Shared loaders of the window data modules: a resumable shuffled train loader, a fixed-order
    validation loader, and the data position saved in every checkpoint.

    Subclasses build ``self.train_set`` (windows of ``window``) and ``self.val_set`` (windows of
    ``val_window``) in ``setup``.
    """

    def __init__(self, window: int, val_window: int, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.window, self.val_window = window, val_window
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._resume: dict[str, int] = {}

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows; after a resume, the interrupted epoch continues where it stopped."""
        train_set = self._ready(self.train_set)
        sampler = EpochSampler(len(train_set), self.seed)
        if self._resume:
            sampler.set_epoch(self._resume["epoch"])
            sampler.skip(self._resume["batches"] * self.batch_size)
            self._resume = {}
        return self._loader(train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        """Validation windows in one fixed shuffled order.

        Shuffled so that a batch mixes episodes (the forecast-retrieval metric ranks a prediction
        against the batch's other windows), fixed so that every validation sees the same windows.
        """
        val_set = self._ready(self.val_set)
        return self._loader(val_set, FixedOrder(len(val_set), self.seed))

    def state_dict(self) -> dict[str, int]:
        """The data position, saved in every checkpoint: epoch and batches consumed in it."""
        trainer = self.trainer
        if trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict)

    def _loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _check_windows(self, source: object, has_val_episodes: bool) -> None:
        """Refuse a split without training windows; warn when held-out episodes give no validation window."""
        if len(self._ready(self.train_set)) == 0:
            raise ValueError(f"{source}: no training episode has {self.window} frames")
        if has_val_episodes and len(self._ready(self.val_set)) == 0:
            warnings.warn(f"{source}: no validation episode has {self.val_window} frames", stacklevel=3)

    def _ready(self, dataset: Dataset | None) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before using the data")
        return dataset


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``(train, val)`` episode indices; at least one validation episode when
    ``val_fraction > 0`` and there are two or more episodes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, round(val_fraction * n))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class EpisodeDataModule(ResumableWindows):
    """Windows of a collected episode dataset, split into train/val by episode.

    Args:
        root: dataset directory (see :mod:`thinkjepa.data.episodes`).
        window: frames per training window.
        val_window: frames per validation window (longer, for open-loop rollouts).
        batch_size: windows per batch.
        val_fraction: fraction of episodes held out for validation (at least one when > 0 and there
            are two or more episodes).
        num_workers: DataLoader worker processes.
        seed: seed of the episode split.
    """

    def __init__(
        self,
        root: str,
        window: int = 6,
        val_window: int = 9,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(window, val_window, batch_size, num_workers, seed)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.root, self.val_fraction = root, val_fraction
        self.store: EpisodeStore | None = None
        self.train_episodes: list[int] = []
        self.val_episodes: list[int] = []

    def setup(self, stage: str | None = None) -> None:
        """Open the store (raises ``EpisodeFileError`` naming a bad file) and split the episodes."""
        if self.store is not None:
            return
        self.store = EpisodeStore(self.root)
        self.train_episodes, self.val_episodes = split_episodes(len(self.store), self.val_fraction, self.seed)
        self.train_set = WindowDataset(self.store, self.window, self.train_episodes)
        self.val_set = WindowDataset(self.store, self.val_window, self.val_episodes)
        self._check_windows(self.root, bool(self.val_episodes))

    @property
    def image_size(self) -> int:
        """Side of the square frames (available after :meth:`setup`)."""
        return self._opened().image_size

    @property
    def num_actions(self) -> int:
        """Number of discrete actions (available after :meth:`setup`)."""
        return self._opened().num_actions

    def _opened(self) -> EpisodeStore:
        if self.store is None:
            raise RuntimeError("EpisodeDataModule: call setup() before using the data")
        return self.store

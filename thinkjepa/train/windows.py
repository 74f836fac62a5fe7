"""The world model's data modules: windows of frames (stage 1) and of frozen-encoder latents (stage 2).

Both serve a resumable shuffled training loader and a fixed-order validation loader, and save their data
position in every checkpoint (:class:`ResumableWindows`). The datasets themselves are plain torch datasets
in :mod:`thinkjepa.data.windows` and :mod:`thinkjepa.data.latents`.
"""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.latents import Encode, LatentWindowDataset, cached_guidance, cached_latents
from thinkjepa.data.windows import EpochSampler, FixedOrder, WindowDataset, split_episodes


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
        frameskip: Action blocks of a continuous-action dataset: windows step ``frameskip`` stored frames at a
            time and each action is the block of ``frameskip`` actions between them (the model's
            ``predictor.num_actions`` is then ``frameskip`` times the stored action dimension).
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
        frameskip: int = 1,
    ) -> None:
        super().__init__(window, val_window, batch_size, num_workers, seed)
        if frameskip < 1:
            raise ValueError(f"frameskip must be >= 1, got {frameskip}")
        self.frameskip = frameskip
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
        self.train_set = WindowDataset(self.store, self.window, self.train_episodes, self.frameskip)
        self.val_set = WindowDataset(self.store, self.val_window, self.val_episodes, self.frameskip)
        self._check_windows(self.root, bool(self.val_episodes))

    @property
    def image_size(self) -> int:
        """Side of the square frames (available after :meth:`setup`)."""
        return self._opened().image_size

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, or the dimension of a continuous action block (available after
        :meth:`setup`)."""
        return self._opened().num_actions * self.frameskip

    @property
    def action_space(self) -> str:
        """``discrete`` or ``continuous`` (available after :meth:`setup`)."""
        return self._opened().action_space

    def _opened(self) -> EpisodeStore:
        if self.store is None:
            raise RuntimeError("EpisodeDataModule: call setup() before using the data")
        return self.store


class LatentDataModule(ResumableWindows):
    """Latent windows of one or more episode datasets, split into train/val by episode.

    The encoder comes from the LightningModule being fitted: it must provide
    ``latent_source() -> (encode, key)`` (see :class:`~thinkjepa.train.predictor.PredictorModule`). A module
    whose ``guidance_source()`` returns ``(guide, key)`` (a guided predictor) also gets each window's guidance
    vector, cached per frame beside the latents (:func:`~thinkjepa.data.latents.cached_guidance`).
    Encoding happens once, in ``prepare_data`` (rank 0 only under DDP); every rank then reads the cache
    through a memory map, without copying it (see the module docstring).

    Args:
        roots: dataset directories (see :mod:`thinkjepa.data.episodes`); all need the same image size.
        window: latents per training window.
        val_window: latents per validation window (longer, for open-loop metrics).
        batch_size: windows per batch.
        val_fraction: fraction of each dataset's episodes held out for validation.
        num_workers: DataLoader worker processes.
        seed: seed of the episode split and the shuffle.
        encode_batch_size: frames per encoder call when building the cache.
    """

    def __init__(
        self,
        roots: list[str],
        window: int = 6,
        val_window: int = 9,
        batch_size: int = 256,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
        encode_batch_size: int = 256,
    ) -> None:
        super().__init__(window, val_window, batch_size, num_workers, seed)
        if not roots:
            raise ValueError("LatentDataModule needs at least one dataset in roots")
        self.save_hyperparameters()
        self.roots, self.val_fraction = list(roots), val_fraction
        self.encode_batch_size = encode_batch_size
        self.stores: list[EpisodeStore] = []

    def _source(self) -> tuple[Encode, str]:
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "latent_source"):
            raise TypeError(
                "LatentDataModule needs a model with latent_source() (e.g. "
                "thinkjepa.train.predictor.PredictorModule), got "
                f"{type(module).__name__ if module is not None else 'no model'}"
            )
        return module.latent_source()

    def _guidance(self, store: EpisodeStore) -> list[np.ndarray]:
        """``[guidance (F, C)]`` of ``store`` for a guided predictor, else ``[]``."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        source = module.guidance_source() if module is not None and hasattr(module, "guidance_source") else None
        if source is None:
            return []
        guide, key = source
        return [cached_guidance(guide, store, key)]

    def _open(self) -> None:
        if not self.stores:
            self.stores = [EpisodeStore(r) for r in self.roots]
            sizes = {s.image_size for s in self.stores}
            if len(sizes) > 1:
                raise ValueError(f"datasets {self.roots} have different image sizes {sorted(sizes)}")

    def prepare_data(self) -> None:
        """Encode every dataset once (cached); runs on one process per node."""
        self._open()
        encode, key = self._source()
        for store in self.stores:
            cached_latents(encode, store, key, self.encode_batch_size)
            self._guidance(store)

    def setup(self, stage: str | None = None) -> None:
        """Read the caches (encoding what is missing) and split each dataset by episode."""
        if self.train_set is not None:
            return
        self._open()
        encode, key = self._source()
        parts, train, val = [], [], []
        for p, store in enumerate(self.stores):
            latents = cached_latents(encode, store, key, self.encode_batch_size)  # read-only memory map
            parts.append((latents, store.per_frame("actions"), *self._guidance(store)))
            spans = np.concatenate([np.full((len(store), 1), p), store.episode_spans()], axis=1)  # (E, 3)
            tr, va = split_episodes(len(store), self.val_fraction, self.seed)
            train.append(spans[tr])
            val.append(spans[va])
        dims = {part[0].shape[1] for part in parts}
        if len(dims) > 1:
            raise ValueError(f"latent caches of {self.roots} have different widths {sorted(dims)}")
        self.latent_dim = dims.pop()
        val = np.concatenate(val)
        self.train_set = LatentWindowDataset(parts, np.concatenate(train), self.window)
        self.val_set = LatentWindowDataset(parts, val, self.val_window)
        self._check_windows(self.roots, len(val) > 0)

    @property
    def image_size(self) -> int:
        """Side of the square frames (available after ``setup``)."""
        self._open()
        return self.stores[0].image_size

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, the largest over the datasets (or their continuous action dimension)."""
        self._open()
        return max(s.num_actions for s in self.stores)

    @property
    def action_space(self) -> str:
        """``discrete`` or ``continuous``: every dataset must say the same."""
        self._open()
        spaces = {s.action_space for s in self.stores}
        if len(spaces) > 1:
            raise ValueError(f"datasets {self.roots} mix discrete and continuous actions")
        return spaces.pop()

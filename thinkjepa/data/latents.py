"""Episodes as frozen-encoder latents: the data of the world model's second stage.

Stage 2 (:class:`~thinkjepa.worldmodel.dynamics.PredictorModule`) fits the action-conditioned
predictor on latents of a *frozen* encoder, as DINO-WM and V-JEPA 2-AC do. Encoding every frame once
and training on the cached ``(frames, D)`` array makes a predictor step ~100x cheaper than a
world-model step on images, so the predictor can see many more episodes than the encoder did.

The cache is ``<dataset>/latents/<key>.npy`` (float32, one row per frame in the store's episode
order), written atomically; ``key`` identifies the encoder (its weights' fingerprint), so a cache is
never reused for another encoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from thinkjepa.checkpoint import atomic_path
from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.windows import ResumableWindows, split_episodes

Encode = Callable[[torch.Tensor], torch.Tensor]
"""``uint8 (N, H, W, 3)`` frames -> ``(N, D)`` latents."""


def stacked(image: Callable[[int], np.ndarray], keys: Iterable[int], batch_size: int) -> Iterator[np.ndarray]:
    """``image(k)`` for each of ``keys``, stacked ``batch_size`` at a time (one batch of frames in memory).

    Feed it to :func:`encode_fixed_batches` to encode frames read one at a time (a dataset's samples).
    """
    keys = list(keys)
    for start in range(0, len(keys), batch_size):
        yield np.stack([image(k) for k in keys[start : start + batch_size]])


@torch.no_grad()
def encode_fixed_batches(encode: Encode, arrays: Iterable[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Latents ``float32 (N, D)`` of the frames of ``arrays`` (each ``uint8 (n_i, H, W, 3)``), in order.

    Every encoder call gets exactly ``batch_size`` frames (the last batch is padded): on CPU, torch
    keeps buffers per input shape, and a ViT fed batches of ever-changing size (one per episode
    length) grew by ~40 MB per new shape, 13 GB over 160k frames, where fixed batches stay flat.
    """
    out: list[np.ndarray] = []
    batch: np.ndarray | None = None
    filled = 0
    for frames in arrays:
        frames = np.asarray(frames)
        if batch is None:
            batch = np.zeros((batch_size, *frames.shape[1:]), dtype=frames.dtype)
        while len(frames):
            take = min(batch_size - filled, len(frames))
            batch[filled : filled + take] = frames[:take]
            filled, frames = filled + take, frames[take:]
            if filled == batch_size:
                out.append(encode(torch.from_numpy(batch)).float().cpu().numpy())
                filled = 0
    if filled:
        out.append(encode(torch.from_numpy(batch)).float().cpu().numpy()[:filled])
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def encode_store(encode: Encode, store: EpisodeStore, batch_size: int = 256) -> np.ndarray:
    """Latents ``float32 (F, D)`` of every frame of ``store``, episode after episode."""
    episodes = tqdm(range(len(store)), desc=f"encoding {Path(store.root).name}", unit="ep", leave=False)
    return encode_fixed_batches(encode, (store.frames(i) for i in episodes), batch_size)


def cached_latents(encode: Encode, store: EpisodeStore, key: str, batch_size: int = 256) -> np.ndarray:
    """:func:`encode_store`, cached under ``<store>/latents/<key>.npy``; a stale or unreadable cache
    (wrong number of frames) is recomputed with a warning."""
    frames = sum(store.meta(i).num_frames for i in range(len(store)))
    path = Path(store.root) / "latents" / f"{key}.npy"
    if path.is_file():
        try:
            latents = np.load(path, mmap_mode="r")
            if latents.ndim == 2 and latents.shape[0] == frames:
                return latents
            problem = f"shape {latents.shape}, expected ({frames}, D)"
        except (OSError, ValueError) as err:
            problem = str(err)
        warnings.warn(f"latent cache {path} is unusable ({problem}); re-encoding", stacklevel=2)
    latents = encode_store(encode, store, batch_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, latents)
    return np.load(path, mmap_mode="r")


class LatentWindowDataset(Dataset):
    """Windows of ``window`` consecutive latents of one episode and the actions between them.

    Args:
        latents: ``(F, D)`` latents of every frame, episodes back to back.
        actions: ``(F,)`` action taken at each frame (the last frame of an episode holds padding).
        episodes: ``(first_frame, num_frames)`` of each served episode.
        window: latents per item (>= 2).

    Items are dicts: ``latents`` float32 ``(T, D)`` and ``actions`` int64 ``(T - 1,)``.
    """

    def __init__(self, latents: torch.Tensor, actions: torch.Tensor, episodes: Sequence[tuple[int, int]], window: int):
        if window < 2:
            raise ValueError(f"window must be >= 2 latents, got {window}")
        self.latents, self.actions, self.window = latents, actions, window
        starts = [first + s for first, n in episodes for s in range(n - window + 1)]
        self._starts = torch.as_tensor(starts, dtype=torch.long)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        s = int(self._starts[k])
        return {"latents": self.latents[s : s + self.window], "actions": self.actions[s : s + self.window - 1]}


class LatentDataModule(ResumableWindows):
    """Latent windows of one or more episode datasets, split into train/val by episode.

    The encoder comes from the LightningModule being fitted: it must provide
    ``latent_source() -> (encode, key)`` (see :class:`~thinkjepa.worldmodel.dynamics.PredictorModule`).
    Encoding happens once, in ``prepare_data`` (rank 0 only under DDP); every rank then reads the cache.

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
                "thinkjepa.worldmodel.dynamics.PredictorModule), got "
                f"{type(module).__name__ if module is not None else 'no model'}"
            )
        return module.latent_source()

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

    def setup(self, stage: str | None = None) -> None:
        """Read the caches (encoding what is missing) and split each dataset by episode."""
        if self.train_set is not None:
            return
        self._open()
        encode, key = self._source()
        latents, actions, train, val, offset = [], [], [], [], 0
        for store in self.stores:
            z = cached_latents(encode, store, key, self.encode_batch_size)
            spans = []
            for i in range(len(store)):
                n = store.meta(i).num_frames
                a = np.zeros(n, dtype=np.int64)
                a[:-1] = store.actions(i)
                actions.append(a)
                spans.append((offset, n))
                offset += n
            latents.append(np.asarray(z, dtype=np.float32))
            tr, va = split_episodes(len(store), self.val_fraction, self.seed)
            train += [spans[i] for i in tr]
            val += [spans[i] for i in va]
        all_latents = torch.from_numpy(np.concatenate(latents))
        all_actions = torch.from_numpy(np.concatenate(actions))
        self.latent_dim = all_latents.shape[1]
        self.train_set = LatentWindowDataset(all_latents, all_actions, train, self.window)
        self.val_set = LatentWindowDataset(all_latents, all_actions, val, self.val_window)
        self._check_windows(self.roots, bool(val))

    @property
    def image_size(self) -> int:
        """Side of the square frames (available after ``setup``)."""
        self._open()
        return self.stores[0].image_size

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, the largest over the datasets."""
        self._open()
        return max(s.num_actions for s in self.stores)

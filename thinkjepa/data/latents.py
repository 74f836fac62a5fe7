"""Episodes as frozen-encoder latents: the data of the world model's second stage.

Stage 2 (:class:`~thinkjepa.train.predictor.PredictorModule`) fits the action-conditioned
predictor on latents of a *frozen* encoder, as DINO-WM and V-JEPA 2-AC do. Encoding every frame once
and training on the cached ``(frames, D)`` array makes a predictor step ~100x cheaper than a
world-model step on images, so the predictor can see many more episodes than the encoder did.

The cache is ``<dataset>/latents/<key>.npy`` (float32, one row per frame in the store's episode
order), written atomically; ``key`` identifies the encoder (its weights' fingerprint), so a cache is
never reused for another encoder.

Memory: stage 2 reads ~0.5M frames (10.8 GB) of three datasets, so nothing here holds all of anything.
Frames are read from the file a batch at a time and their latents written straight into the cache
(:func:`write_latents`); training windows are sliced out of read-only memory maps of the caches and of
each store's ``actions.npy`` (:class:`LatentWindowDataset`). The whole stage peaks at ~1.6 GB resident,
mostly torch itself, with or without a cache to build.
"""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from thinkjepa.checkpoint import atomic_path
from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.windows import window_index

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
def encoded_batches(
    encode: Encode, arrays: Iterable[np.ndarray], batch_size: int = 256
) -> Iterator[np.ndarray]:
    """Latents ``float32 (n, D)`` of the frames of ``arrays`` (each ``uint8 (n_i, H, W, 3)``), in order, one
    encoder call at a time: ``n == batch_size`` except for the last.

    Every encoder call gets exactly ``batch_size`` frames (the last batch is padded): on CPU, torch
    keeps buffers per input shape, and a ViT fed batches of ever-changing size (one per episode
    length) grew by ~40 MB per new shape, 13 GB over 160k frames, where fixed batches stay flat.
    Each input array is copied into the batch before the next one is taken, so ``arrays`` may reuse
    one buffer (:meth:`~thinkjepa.data.episodes.EpisodeStore.frame_chunks`). Each output is a numpy
    copy, not a view of the encoder's output tensor: kept in a list, such views pinned the encoder's
    freed buffers in the malloc heap (40k frames, 20 MB of latents: 0.2-1.0 GB of free heap held, against
    0.03-0.15 GB with copies), which is how encoding the stage-2 datasets grew past 16 GB.
    """
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
                yield _numpy_copy(encode(torch.from_numpy(batch)))
                filled = 0
    if filled:
        yield _numpy_copy(encode(torch.from_numpy(batch))[:filled])


def _numpy_copy(latents: torch.Tensor) -> np.ndarray:
    """``float32`` numpy copy of ``latents``, owning its memory (see :func:`encoded_batches`)."""
    return np.array(latents.detach().float().cpu().numpy(), dtype=np.float32, copy=True)


def encode_fixed_batches(encode: Encode, arrays: Iterable[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Latents ``float32 (N, D)`` of the frames of ``arrays`` (each ``uint8 (n_i, H, W, 3)``), in order, in
    memory; see :func:`encoded_batches` for the fixed-size batches, and :func:`write_latents` to encode
    a whole dataset into a file instead.
    """
    out = list(encoded_batches(encode, arrays, batch_size))
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def _store_frames(store: EpisodeStore, batch_size: int) -> Iterator[np.ndarray]:
    """Every frame of ``store`` in order, ``batch_size`` at a time, with a progress bar."""
    name = Path(store.root).name
    with tqdm(total=store.num_frames, desc=f"encoding {name}", unit="frame", leave=False) as progress:
        for chunk in store.frame_chunks(batch_size):
            yield chunk
            progress.update(len(chunk))


def encode_store(encode: Encode, store: EpisodeStore, batch_size: int = 256) -> np.ndarray:
    """Latents ``float32 (F, D)`` of every frame of ``store``, episode after episode, in memory (for small
    stores; :func:`write_latents` streams a large one to disk)."""
    return encode_fixed_batches(encode, _store_frames(store, batch_size), batch_size)


def write_latents(encode: Encode, store: EpisodeStore, path: str | Path, batch_size: int = 256) -> None:
    """Encode every frame of ``store`` into the ``.npy`` file ``path`` (``float32 (F, D)``), atomically.

    Frames are read from the file one batch at a time and each batch of latents goes straight into a
    memory map of the final file (preallocated once the first batch gives ``D``), so memory holds one
    batch of frames and the map's written pages, never all frames or all latents: the stage-2 datasets
    have ~10 GB of frames. The file appears at ``path`` only when complete (temp file, then ``os.replace``).
    """
    with atomic_path(path) as tmp:
        out: np.memmap | None = None
        row, frames = 0, store.num_frames
        for z in encoded_batches(encode, _store_frames(store, batch_size), batch_size):
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(frames, z.shape[1]))
            out[row : row + len(z)] = z
            row += len(z)
        if out is None or row != frames:
            raise RuntimeError(f"encoded {row} of {frames} frames of {store.root}")
        out.flush()
        del out  # unmap before the file is renamed into place


def cached_latents(encode: Encode, store: EpisodeStore, key: str, batch_size: int = 256) -> np.ndarray:
    """Read-only memory map of the latents of every frame of ``store`` (:func:`write_latents`), cached under
    ``<store>/latents/<key>.npy``; a stale or unreadable cache (wrong number of frames) is recomputed
    with a warning."""
    path = Path(store.root) / "latents" / f"{key}.npy"
    cache = _read_cache(path, store.num_frames, "latent")
    if cache is None:
        write_latents(encode, store, path, batch_size)
        cache = np.load(path, mmap_mode="r")
    return cache


def _read_cache(path: Path, frames: int, what: str) -> np.ndarray | None:
    """The per-frame cache at ``path`` as a read-only memory map, or ``None`` when there is none or it is unusable
    (unreadable, or not one row per frame: then with a warning, and the caller computes it again)."""
    if not path.is_file():
        return None
    try:
        cache = np.load(path, mmap_mode="r")
        if cache.ndim == 2 and cache.shape[0] == frames:
            return cache
        problem = f"shape {cache.shape}, expected ({frames}, ...)"
    except (OSError, ValueError) as err:
        problem = str(err)
    warnings.warn(f"{what} cache {path} is unusable ({problem}); computing it again", stacklevel=3)
    return None


Guide = Callable[[np.ndarray, list[str]], torch.Tensor]
"""``uint8 (N, H, W, 3)`` frames and their instructions -> ``(N, C)`` guidance vectors (a guided predictor's ``c``)."""


def cached_guidance(guide: Guide, store: EpisodeStore, key: str, batch_size: int = 64) -> np.ndarray:
    """Read-only memory map ``float16 (F, C)`` of the guidance vector of every frame of ``store`` with its
    episode's instruction, cached under ``<store>/latents/guidance-<key>.npy`` (rows as the latent cache's);
    computed a batch at a time straight into the file, which appears only when complete. An unusable cache is
    recomputed with a warning (as the latent cache is)."""
    path = Path(store.root) / "latents" / f"guidance-{key}.npy"
    frames = store.num_frames
    if (cache := _read_cache(path, frames, "guidance")) is not None:
        return cache
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        out: np.memmap | None = None
        rows: list[int] = []
        images: list[np.ndarray] = []
        missions: list[str] = []

        def flush() -> None:
            nonlocal out
            c = guide(np.stack(images), missions).float().cpu().numpy()
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(frames, c.shape[1]))
            out[rows] = c
            rows.clear()
            images.clear()
            missions.clear()

        with tqdm(total=frames, desc=f"guidance {Path(store.root).name}", unit="frame", leave=False) as progress:
            for i, (start, count) in enumerate(store.episode_spans()):
                episode, mission = store.frames(i), store.meta(i).mission
                for t in range(int(count)):
                    rows.append(int(start) + t)
                    images.append(episode[t])
                    missions.append(mission)
                    if len(rows) == batch_size:
                        flush()
                        progress.update(batch_size)
            if rows:
                progress.update(len(rows))
                flush()
        if out is None:
            raise ValueError(f"{store.root} has no frames to guide")
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


class LatentWindowDataset(Dataset):
    """Windows of ``window`` consecutive latents of one episode and the actions between them.

    The latents and actions stay where they are (normally read-only memory maps of the latent cache and
    of each store's ``actions.npy``); each item copies one window out of them, and the only array built
    here is the window index, two numbers per window.

    Args:
        parts: ``(latents (F_p, D), actions (F_p,))`` of each dataset ``p``: the latent and the action
            taken at each of its frames, episodes back to back (the last frame's action is never served);
            or ``(latents, actions, guidance (F_p, C))`` for a guided predictor.
        episodes: ``int (E, 3)``: ``(part, first_frame, num_frames)`` of each served episode, in serving
            order (items enumerate every window of the first episode, then of the next, ...).
        window: latents per item (>= 2).

    Items are dicts: ``latents`` float32 ``(T, D)`` and ``actions`` int64 ``(T - 1,)`` (float32 ``(T - 1, A)``
    for continuous actions); with guidance also ``guidance`` float32 ``(C,)``: the vector of the window's first
    frame, which the predictor holds for the whole window.
    """

    def __init__(
        self, parts: Sequence[tuple[np.ndarray, np.ndarray]], episodes: np.ndarray | Sequence[Sequence[int]],
        window: int,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 latents, got {window}")
        self.parts, self.window = [tuple(p) for p in parts], window
        if len({len(p) for p in self.parts}) > 1 or any(len(p) not in (2, 3) for p in self.parts):
            raise ValueError("parts are (latents, actions) or (latents, actions, guidance), the same for every part")
        episodes = np.asarray(episodes, dtype=np.int64).reshape(-1, 3)
        if len(episodes) and (episodes[:, 0].min() < 0 or episodes[:, 0].max() >= len(self.parts)):
            raise ValueError(f"episodes name parts outside [0, {len(self.parts)})")
        index = window_index(np.arange(len(episodes)), episodes[:, 2], window)  # (episode, offset) per window
        self._part = episodes[index[:, 0], 0].astype(np.int32)
        self._start = episodes[index[:, 0], 1] + index[:, 1]  # row of the window's first latent in its part

    def __len__(self) -> int:
        return len(self._start)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        s, (latents, actions, *guidance) = int(self._start[k]), self.parts[int(self._part[k])]
        item = {
            "latents": torch.from_numpy(np.array(latents[s : s + self.window], dtype=np.float32)),
            "actions": torch.from_numpy(_action_array(actions[s : s + self.window - 1])),
        }
        if guidance:
            item["guidance"] = torch.from_numpy(np.array(guidance[0][s], dtype=np.float32))
        return item

    def __getstate__(self) -> dict:
        # Memory maps pickle as their whole contents; send their files instead (spawned DataLoader workers).
        state = self.__dict__.copy()
        state["parts"] = [tuple(_Remap.of(a) for a in part) for part in self.parts]
        return state

    def __setstate__(self, state: dict) -> None:
        state["parts"] = [tuple(_Remap.open_if(a) for a in part) for part in state["parts"]]
        self.__dict__.update(state)


def _action_array(actions: np.ndarray) -> np.ndarray:
    """A copy of stored actions as the predictor takes them: int64 ids, or float32 continuous actions."""
    return np.array(actions, dtype=np.int64 if np.issubdtype(actions.dtype, np.integer) else np.float32)


class _Remap:
    """A whole-file read-only memory map by reference (file, offset, dtype, shape), to pickle it cheaply."""

    def __init__(self, filename: str, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.filename, self.offset, self.dtype, self.shape = filename, offset, dtype, shape

    @classmethod
    def of(cls, array: np.ndarray) -> _Remap | np.ndarray:
        """``array`` by reference if it maps a whole file (not a slice of a map), else ``array`` itself."""
        if isinstance(array, np.memmap) and array.filename and isinstance(array.base, mmap.mmap):
            return cls(array.filename, array.offset, array.dtype, array.shape)
        return array

    @staticmethod
    def open_if(array: _Remap | np.ndarray) -> np.ndarray:
        """The memory map ``array`` refers to, re-opened read-only; any other array as it is."""
        if not isinstance(array, _Remap):
            return array
        return np.memmap(array.filename, dtype=array.dtype, mode="r", offset=array.offset, shape=array.shape)



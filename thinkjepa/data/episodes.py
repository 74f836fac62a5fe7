"""The on-disk episode dataset: a directory of memory-mappable ``.npy`` arrays plus ``episodes.json``.

Episodes are concatenated; every per-frame array is aligned by the global frame index ``g``. An
episode of ``T`` steps owns frames ``start .. start+T`` (``T + 1`` frames, the last one after the
final action)::

    frames.npy           uint8 (N, H, W, 3)  full-grid RGB observation, H == W == image_size
    actions.npy          int64 (N,)          action taken at frame g; -1 on each episode's last frame
                         float32 (N, A)      ... in a continuous-action dataset (header ``action_box``):
                                             the A-dim action, NaN on each episode's last frame
    expert.npy           bool  (N,)          action came from the bot (False: epsilon-random; last: False)
    bot_subgoal_end.npy  int32 (N,)          episode-local frame where the bot subgoal active at g completes
                                             (always in [t, T] for local step t; T on the last frame)
    waypoint_index.npy   int32 (N,)          row in waypoint_frames.npy of g's next full-grid waypoint
    waypoint_frames.npy  uint8 (M, H, W, 3)  waypoint renders (agent at the waypoint state, crossed doors
                                             open), deduplicated within each episode, episode-contiguous
    episodes.json        {"format_version", "image_size", "tile_sizes" {level: px}, "levels",
                          "action_names", "num_actions", "num_frames", "num_waypoint_frames", "info",
                          "action_box" {"low": [A], "high": [A]} (continuous actions only; num_actions = A),
                          "episodes": [EpisodeMeta.to_dict(), ...]}

Per-episode metadata (:class:`~thinkjepa.data.records.EpisodeMeta`): level, seed, mission, start,
num_steps, success, tile_size, waypoint_start, num_waypoint_frames, bot subgoal segments
``{start, end, kind, target}`` and waypoint segments ``{start, end, index, state}``.

:class:`~thinkjepa.data.writer.EpisodeWriter` builds all files in a hidden temporary sibling directory and
``os.replace``-s it into place when closed, so a crash never leaves a half-written dataset at ``root``.
:class:`EpisodeStore` memory-maps the arrays and validates them up front, raising
:class:`EpisodeFileError` naming the offending file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from thinkjepa.data.records import EpisodeMeta

FORMAT_VERSION = 1
META_FILE = "episodes.json"
FRAME_ARRAYS = {  # per-frame arrays: name -> dtype
    "frames": np.uint8,
    "actions": np.int64,
    "expert": np.bool_,
    "bot_subgoal_end": np.int32,
    "waypoint_index": np.int32,
}
WAYPOINT_FRAMES = "waypoint_frames"


class EpisodeFileError(ValueError):
    """A dataset file is missing, truncated, corrupt or inconsistent with the others."""


class EpisodeStore:
    """Read-only, memory-mapped access to a dataset written by :class:`EpisodeWriter`.

    Args:
        root: dataset directory.

    Raises:
        EpisodeFileError: naming the file, if any file is missing, truncated, corrupt, has the wrong
            dtype/shape, disagrees with ``episodes.json``, or the dataset holds no episodes.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._open()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}  # workers re-map the files instead of pickling their contents

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = state["root"]
        self._open()

    def __len__(self) -> int:
        return len(self._episodes)

    @property
    def image_size(self) -> int:
        """Side of the square frames in pixels."""
        return int(self.header["image_size"])

    @property
    def num_actions(self) -> int:
        """Number of discrete actions (indices ``0..num_actions-1``), or the dimension of continuous ones."""
        return int(self.header["num_actions"])

    @property
    def action_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(low, high)`` float32 ``(A,)`` bounds of a continuous-action dataset; ``None`` for discrete actions."""
        box = self.header.get("action_box")
        if box is None:
            return None
        return np.asarray(box["low"], dtype=np.float32), np.asarray(box["high"], dtype=np.float32)

    @property
    def action_space(self) -> str:
        """``"discrete"`` or ``"continuous"`` (what a world model's ``predictor.action_space`` must say)."""
        return "discrete" if self.action_box is None else "continuous"

    @property
    def num_frames(self) -> int:
        """Frames of all episodes together (rows of every per-frame array)."""
        return len(self._arrays["actions"])

    def meta(self, i: int) -> EpisodeMeta:
        """Metadata of episode ``i``."""
        return self._episodes[self._check_episode(i)]

    def episode_spans(self) -> np.ndarray:
        """``int64 (E, 2)``: ``(start, num_frames)`` of every episode: its rows of the per-frame arrays."""
        return np.array([(e.start, e.num_frames) for e in self._episodes], dtype=np.int64).reshape(-1, 2)

    def per_frame(self, name: str) -> np.ndarray:
        """The whole read-only memory-mapped per-frame array ``name`` (a key of ``FRAME_ARRAYS``), episodes
        back to back; e.g. ``per_frame("actions")`` holds -1 on each episode's last frame.

        Readers of many episodes slice this one map rather than gathering per-episode copies.
        """
        if name not in FRAME_ARRAYS:
            raise KeyError(f"no per-frame array {name!r}; the dataset has {sorted(FRAME_ARRAYS)}")
        return self._arrays[name]

    def frame_chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Every frame of the dataset in order, ``uint8 (<= rows, H, W, 3)`` at a time, read from
        ``frames.npy`` with plain file reads into one reused buffer (copy what you keep before taking the
        next chunk).

        Why not the memory map: a page read through a map stays mapped, and counted in this process's
        resident memory, until the map is closed or the kernel reclaims it, so one pass over a large
        dataset's frames (e.g. encoding all of them) grows the process towards the size of the file
        (10.8 GB for stage 2's datasets); read pages only pass through the kernel's page cache.

        Raises:
            EpisodeFileError: if ``frames.npy`` ends early.
        """
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        frames = self._arrays["frames"]
        path = self.root / "frames.npy"
        buffer = np.empty((min(rows, len(frames)), *frames.shape[1:]), dtype=np.uint8)
        with open(path, "rb") as f:
            f.seek(frames.offset)  # where np.load found the data, after the .npy header
            for start in range(0, len(frames), rows):
                chunk = buffer[: min(rows, len(frames) - start)]
                if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                    raise EpisodeFileError(f"{path}: ends before frame {start + len(chunk)} of {len(frames)}")
                yield chunk

    def frames(self, i: int) -> np.ndarray:
        """``uint8 (T+1, H, W, 3)`` read-only memory-mapped frames of episode ``i``."""
        m = self.meta(i)
        return self._arrays["frames"][m.start : m.start + m.num_frames]

    def actions(self, i: int) -> np.ndarray:
        """``int64 (T,)`` actions of episode ``i``."""
        m = self.meta(i)
        return self._arrays["actions"][m.start : m.start + m.num_steps]

    def expert(self, i: int) -> np.ndarray:
        """``bool (T,)``: which of episode ``i``'s actions came from the bot."""
        m = self.meta(i)
        return self._arrays["expert"][m.start : m.start + m.num_steps]

    def subgoal_frame(self, i: int, t: int, source: Literal["bot", "waypoint"] = "bot") -> np.ndarray:
        """The subgoal image for step ``t`` of episode ``i``: ``uint8 (H, W, 3)``.

        Args:
            i: episode index.
            t: episode-local frame index in ``[0, T]``.
            source: ``"bot"`` = the episode's own frame where the bot's active subgoal completes;
                ``"waypoint"`` = the render of the next full-grid shortest-path waypoint.
        """
        m = self.meta(i)
        if not 0 <= t <= m.num_steps:
            raise IndexError(f"step {t} outside episode {i} with frames 0..{m.num_steps}")
        if source == "bot":
            return self._arrays["frames"][m.start + int(self._arrays["bot_subgoal_end"][m.start + t])]
        if source == "waypoint":
            return self._arrays[WAYPOINT_FRAMES][int(self._arrays["waypoint_index"][m.start + t])]
        raise ValueError(f"source must be 'bot' or 'waypoint', got {source!r}")

    def _check_episode(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range for {len(self)} episodes in {self.root}")
        return i % len(self)

    def _open(self) -> None:
        path = self.root / META_FILE
        try:
            header = json.loads(path.read_text())
            episodes = [EpisodeMeta.from_dict(e) for e in header["episodes"]]
            image_size, num_actions = int(header["image_size"]), int(header["num_actions"])
            version = header["format_version"]
        except FileNotFoundError as e:
            raise EpisodeFileError(f"{path}: missing (is {self.root} an episode dataset?)") from e
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EpisodeFileError(f"{path}: corrupt or malformed ({type(e).__name__}: {e})") from e
        if version != FORMAT_VERSION:
            raise EpisodeFileError(f"{path}: format_version {version}, this code reads {FORMAT_VERSION}")
        if not episodes:
            raise EpisodeFileError(f"{path}: the dataset holds no episodes")
        # The raw episode dicts are kept only as EpisodeMeta (tens of MB of JSON objects per large dataset).
        self.header = {k: v for k, v in header.items() if k != "episodes"}
        self._episodes = episodes
        num_frames = sum(e.num_frames for e in episodes)
        num_wp = sum(e.num_waypoint_frames for e in episodes)
        self._arrays = {}
        for name, dtype in [*FRAME_ARRAYS.items(), (WAYPOINT_FRAMES, np.uint8)]:
            n = num_wp if name == WAYPOINT_FRAMES else num_frames
            shape = (n, image_size, image_size, 3) if name in ("frames", WAYPOINT_FRAMES) else (n,)
            if name == "actions" and self.action_box is not None:
                dtype, shape = np.float32, (n, num_actions)
            self._arrays[name] = self._load(name, np.dtype(dtype), shape)
        self._check_consistency(num_actions)

    def _load(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        path = self.root / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError as e:
            raise EpisodeFileError(f"{path}: missing") from e
        except (OSError, ValueError, EOFError) as e:
            raise EpisodeFileError(f"{path}: truncated or corrupt ({e})") from e
        if arr.dtype != dtype or arr.shape != shape:
            raise EpisodeFileError(
                f"{path}: holds {arr.dtype} {arr.shape}, expected {dtype} {shape} from {META_FILE}"
            )
        return arr

    def _check_consistency(self, num_actions: int) -> None:
        meta_path = self.root / META_FILE
        start = wp_start = 0
        for k, e in enumerate(self._episodes):
            if e.start != start or e.waypoint_start != wp_start or e.num_steps < 0:
                raise EpisodeFileError(
                    f"{meta_path}: episode {k} has start {e.start}/waypoint_start "
                    f"{e.waypoint_start}, expected {start}/{wp_start}"
                )
            start, wp_start = start + e.num_frames, wp_start + e.num_waypoint_frames
        starts = np.array([e.start for e in self._episodes])
        lengths = np.array([e.num_frames for e in self._episodes])
        last = starts + lengths - 1
        local = np.arange(start) - np.repeat(starts, lengths)  # (N,) episode-local frame index
        steps = np.repeat(lengths - 1, lengths)  # (N,) T of the owning episode
        actions = np.asarray(self._arrays["actions"])
        is_last = np.zeros(start, dtype=bool)
        is_last[last] = True
        if self.action_box is not None:
            low, high = self.action_box
            taken = actions[~is_last]
            if not np.isnan(actions[is_last]).all() or not np.isfinite(taken).all() or np.any(
                (taken < low) | (taken > high)
            ):
                raise EpisodeFileError(
                    f"{self.root / 'actions.npy'}: expected NaN exactly on episode ends and actions inside "
                    f"[{low.tolist()}, {high.tolist()}] elsewhere"
                )
        elif np.any(actions[is_last] != -1) or np.any(
            (actions[~is_last] < 0) | (actions[~is_last] >= num_actions)
        ):
            raise EpisodeFileError(
                f"{self.root / 'actions.npy'}: expected -1 exactly on episode ends "
                f"and actions in [0, {num_actions}) elsewhere"
            )
        ends = np.asarray(self._arrays["bot_subgoal_end"])
        if np.any(ends < local) or np.any(ends > steps):
            raise EpisodeFileError(
                f"{self.root / 'bot_subgoal_end.npy'}: values outside [t, T] of their episode"
            )
        wp_lo = np.repeat([e.waypoint_start for e in self._episodes], lengths)
        wp_hi = wp_lo + np.repeat([e.num_waypoint_frames for e in self._episodes], lengths)
        wp = np.asarray(self._arrays["waypoint_index"])
        if np.any(wp < wp_lo) or np.any(wp >= wp_hi):
            raise EpisodeFileError(
                f"{self.root / 'waypoint_index.npy'}: indices outside their episode's "
                f"rows of waypoint_frames.npy"
            )

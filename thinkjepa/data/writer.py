"""Writing an episode dataset (the format is described in :mod:`thinkjepa.data.episodes`): every file is built
in a hidden temporary sibling directory and ``os.replace``-d into place when the writer closes, so a crash never
leaves a half-written dataset at ``root``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinkjepa.data.episodes import FORMAT_VERSION, FRAME_ARRAYS, META_FILE, WAYPOINT_FRAMES
from thinkjepa.data.records import EpisodeMeta, EpisodeRecord
from thinkjepa.envs.babyai import ACTION_NAMES


class EpisodeWriter:
    """Write episodes into a new dataset directory, atomically.

    Use as a context manager; on a clean exit the dataset appears at ``root`` in one ``os.replace``,
    on an exception the temporary directory is deleted and ``root`` is untouched.

    Args:
        root: dataset directory to create.
        overwrite: replace an existing dataset at ``root`` (only a directory holding ``episodes.json``,
            or an empty one, is ever replaced).
        action_names: names of the action indices, stored in the header (discrete actions).
        action_box: ``(low, high)`` bounds of continuous actions: each record's ``actions`` is then float
            ``(T, A)`` inside them, with ``A = len(low)`` (``action_names`` may name the A dimensions).

    Raises:
        FileExistsError: if ``root`` exists and ``overwrite`` is False.
    """

    def __init__(
        self, root: str | os.PathLike, overwrite: bool = False, action_names: Sequence[str] = ACTION_NAMES,
        action_box: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.overwrite = overwrite
        self.action_names = list(action_names)
        self.action_box = None
        if action_box is not None:
            low, high = (np.asarray(b, dtype=np.float32).reshape(-1) for b in action_box)
            if len(low) != len(high) or not len(low) or not np.all(np.isfinite(low) & np.isfinite(high) & (low < high)):
                raise ValueError(f"action_box needs finite low < high of one length, got {action_box}")
            self.action_box = (low, high)
            if action_names is ACTION_NAMES:
                self.action_names = [f"a{i}" for i in range(len(low))]
            elif len(self.action_names) != len(low):
                raise ValueError(f"action_names has {len(self.action_names)} names for {len(low)} action dimensions")
        self.info: dict[str, Any] = {}
        """Free-form JSON-able facts stored under the header's ``info`` (e.g. collection stats)."""
        self._check_root()
        self._tmp: Path | None = None
        self._files: dict[str, Any] = {}
        self._episodes: list[EpisodeMeta] = []
        self._image_size: int | None = None
        self._tile_sizes: dict[str, int] = {}
        self._num_frames = 0
        self._num_waypoint_frames = 0

    def __enter__(self) -> EpisodeWriter:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.tmp-", dir=self.root.parent))
        for name in [*FRAME_ARRAYS, WAYPOINT_FRAMES]:
            self._files[name] = open(self._tmp / f"{name}.raw", "wb")  # noqa: SIM115  (closed in _close_files)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            try:
                self._finish()
            except BaseException:
                self._abort()
                raise
        else:
            self._abort()

    def __len__(self) -> int:
        return len(self._episodes)

    def add(self, record: EpisodeRecord) -> int:
        """Append one episode; returns its index in the dataset.

        Raises:
            ValueError: naming the field whose dtype/shape/values are wrong.
        """
        if self._tmp is None:
            raise RuntimeError("EpisodeWriter.add called outside its `with` block")
        size = self._validate(record)
        num_steps = record.num_steps
        if self.action_box is None:
            actions = np.concatenate([record.actions.astype(np.int64), np.array([-1], np.int64)])
        else:
            actions = np.concatenate([record.actions.astype(np.float32), np.full((1, len(self.action_box[0])), np.nan,
                                                                                   np.float32)])
        expert = np.concatenate([record.expert.astype(np.bool_), np.array([False])])
        arrays = {
            "frames": record.frames,
            "actions": actions,
            "expert": expert,
            "bot_subgoal_end": record.bot_subgoal_end.astype(np.int32),
            "waypoint_index": (record.waypoint_index + self._num_waypoint_frames).astype(np.int32),
            WAYPOINT_FRAMES: record.waypoint_frames,
        }
        for name, arr in arrays.items():
            self._files[name].write(
                np.ascontiguousarray(arr, dtype=self._dtype(name)).tobytes()
            )
        offset = self._num_waypoint_frames
        self._episodes.append(
            EpisodeMeta(
                level=record.level,
                seed=int(record.seed),
                mission=record.mission,
                start=self._num_frames,
                num_steps=num_steps,
                success=bool(record.success),
                tile_size=int(record.tile_size),
                waypoint_start=offset,
                num_waypoint_frames=len(record.waypoint_frames),
                subgoals=tuple(record.subgoals),
                waypoints=tuple(type(w)(w.start, w.end, w.index + offset, w.state) for w in record.waypoints),
            )
        )
        self._image_size = size
        self._tile_sizes.setdefault(record.level, int(record.tile_size))
        self._num_frames += num_steps + 1
        self._num_waypoint_frames += len(record.waypoint_frames)
        return len(self._episodes) - 1

    def _validate(self, r: EpisodeRecord) -> int:
        num_steps = r.num_steps
        size = r.frames.shape[1] if r.frames.ndim == 4 else -1
        expected = {
            "frames": ((num_steps + 1, size, size, 3), np.uint8),
            "actions": ((num_steps,) if self.action_box is None else (num_steps, len(self.action_box[0])), None),
            "expert": ((num_steps,), np.bool_),
            "bot_subgoal_end": ((num_steps + 1,), None),
            "waypoint_index": ((num_steps + 1,), None),
            "waypoint_frames": ((len(r.waypoint_frames), size, size, 3), np.uint8),
        }
        for name, (shape, dtype) in expected.items():
            arr = getattr(r, name)
            if arr.shape != shape or (dtype is not None and arr.dtype != dtype):
                raise ValueError(
                    f"episode {r.level} seed {r.seed}: {name} has {arr.dtype} {arr.shape}, "
                    f"expected {np.dtype(dtype or arr.dtype)} {shape}"
                )
        if self._image_size is not None and size != self._image_size:
            raise ValueError(
                f"episode {r.level} seed {r.seed}: frames are {size}px, dataset is {self._image_size}px"
            )
        local = np.arange(num_steps + 1)
        if np.any(r.bot_subgoal_end < local) or np.any(r.bot_subgoal_end > num_steps):
            raise ValueError(f"episode {r.level} seed {r.seed}: bot_subgoal_end outside [t, {num_steps}]")
        if np.any(r.waypoint_index < 0) or np.any(r.waypoint_index >= len(r.waypoint_frames)):
            raise ValueError(
                f"episode {r.level} seed {r.seed}: waypoint_index outside [0, {len(r.waypoint_frames)})"
            )
        if self.action_box is not None:
            low, high = self.action_box
            if not np.all(np.isfinite(r.actions)) or np.any((r.actions < low) | (r.actions > high)):
                raise ValueError(
                    f"episode {r.level} seed {r.seed}: actions outside the action box [{low.tolist()}, {high.tolist()}]"
                )
        elif np.any(r.actions < 0) or np.any(r.actions >= len(self.action_names)):
            raise ValueError(
                f"episode {r.level} seed {r.seed}: actions outside [0, {len(self.action_names)})"
            )
        return size

    def _dtype(self, name: str) -> type:
        """The stored dtype of array ``name``: float32 actions in a continuous-action dataset, else the format's."""
        if name == "actions" and self.action_box is not None:
            return np.float32
        return FRAME_ARRAYS.get(name, np.uint8)

    def _check_root(self) -> None:
        if not self.root.exists():
            return
        if not self.overwrite:
            raise FileExistsError(f"dataset {self.root} already exists; pass overwrite=True to replace it")
        if not self.root.is_dir() or (any(self.root.iterdir()) and not (self.root / META_FILE).exists()):
            raise FileExistsError(f"{self.root} exists and is not an episode dataset; refusing to replace it")

    def _finish(self) -> None:
        assert self._tmp is not None
        self._close_files()
        if not self._episodes:
            raise ValueError(f"no episodes were added; refusing to write an empty dataset at {self.root}")
        size = self._image_size
        for name in [*FRAME_ARRAYS, WAYPOINT_FRAMES]:
            n = self._num_waypoint_frames if name == WAYPOINT_FRAMES else self._num_frames
            shape = (n, size, size, 3) if name in ("frames", WAYPOINT_FRAMES) else (n,)
            if name == "actions" and self.action_box is not None:
                shape = (n, len(self.action_box[0]))
            dtype = self._dtype(name)
            raw = self._tmp / f"{name}.raw"
            with open(self._tmp / f"{name}.npy", "wb") as out, open(raw, "rb") as src:
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_1_0(out, header)
                shutil.copyfileobj(src, out, length=1 << 24)
            raw.unlink()
        meta = {
            "format_version": FORMAT_VERSION,
            "image_size": size,
            "tile_sizes": self._tile_sizes,
            "levels": list(self._tile_sizes),
            "action_names": self.action_names,
            "num_actions": len(self.action_names),
            **({"action_box": {"low": self.action_box[0].tolist(), "high": self.action_box[1].tolist()}}
               if self.action_box is not None else {}),
            "num_frames": self._num_frames,
            "num_waypoint_frames": self._num_waypoint_frames,
            "info": self.info,
            "episodes": [e.to_dict() for e in self._episodes],
        }
        (self._tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        self._check_root()
        old = None
        if self.root.exists():
            old = self.root.with_name(f".{self.root.name}.old-{os.getpid()}")
            os.replace(self.root, old)
        os.replace(self._tmp, self.root)
        self._tmp = None
        if old is not None:
            shutil.rmtree(old)

    def _close_files(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def _abort(self) -> None:
        self._close_files()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

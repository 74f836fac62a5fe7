"""Safe, atomic checkpoint I/O shared by every stage.

Three promises, each tested in ``tests/reliability``:

* **Atomic writes**: a file is written under a temporary sibling name, flushed, fsync'ed and then
  ``os.replace``-d into place, so a crash mid-write leaves the previous file (or nothing), never a
  truncated file under the real name.
* **No code execution on load**: ``torch.load(weights_only=True)``; a pickle that wants to import or
  call something is refused with :class:`UnsafeCheckpointError`.
* **Strict state dicts**: :func:`load_state_dict_strict` reports every missing, unexpected and
  shape-mismatched key instead of silently half-loading.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint could not be used; the message names the file and the problem."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle would import or call code outside the weights-only allow-list."""


class StateDictMismatchError(CheckpointError):
    """A state dict does not match the module it is loaded into."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces the directory ``path``.

    The old directory is moved aside, the new one renamed into place, then the old one removed: a crash
    leaves the old directory or the new one under ``path`` (or a hidden sibling), never a half-written one.
    On an exception the temporary directory is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_format_json(directory: str | os.PathLike, name: str, format: str, what: str) -> dict[str, Any]:
    """The JSON file ``name`` of an export directory, checked to carry ``"format": format``.

    Raises:
        FileNotFoundError: ``directory`` or the file does not exist (the message calls the export ``what``).
        ValueError: The file has another ``format``.
    """
    file = Path(directory) / name
    if not file.is_file():
        raise FileNotFoundError(f"No {what} at {str(directory)!r}: {file} does not exist")
    config = json.loads(file.read_text())
    if config.get("format") != format:
        raise ValueError(f"{file} has format {config.get('format')!r}, expected {format!r}")
    return config


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path` (parent directories are created)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a torch file without executing code, with errors that name the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle references code outside the weights-only allow-list.
        CheckpointError: the file is truncated or not a torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: its pickle references objects outside torch's weights-only "
            f"allow-list, and unpickling it could run code. Only load checkpoints you trust with "
            f"torch.load(weights_only=False) yourself. Detail: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err


def describe_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """List every difference between ``module.state_dict()`` and ``state``, one line each."""
    own = module.state_dict()
    problems = [f"missing key {k} (expected shape {tuple(own[k].shape)})" for k in own if k not in state]
    problems += [f"unexpected key {k} (shape {tuple(state[k].shape)})" for k in state if k not in own]
    problems += [
        f"shape mismatch at {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    ]
    return problems


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` strictly, raising one error that lists every mismatch.

    Args:
        module: The module to fill.
        state: The state dict read from ``source``.
        source: Where the state came from (a path), used in the error message.
    """
    problems = describe_mismatch(module, state)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise StateDictMismatchError(
            f"{source} does not match the {type(module).__name__} architecture "
            f"({len(problems)} problems):\n  {shown}{more}"
        )
    module.load_state_dict(state, strict=True)

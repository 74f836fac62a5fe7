"""Lightning checkpoint I/O with the guarantees of :mod:`thinkjepa.checkpoint`.

Every ``.ckpt`` a thinkjepa run writes goes through :class:`AtomicCheckpointIO`: written under a
temporary name and renamed (a SIGKILL mid-write never leaves a truncated ``last.ckpt``), and read
with ``weights_only=True`` (a checkpoint from a stranger cannot run code on load).
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from thinkjepa.checkpoint import atomic_torch_save, safe_torch_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic ``save_checkpoint`` and code-free ``load_checkpoint``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO does not take storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: _PATH, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return safe_torch_load(path, map_location=map_location or "cpu")

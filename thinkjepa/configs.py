"""The one dict-to-dataclass helper: rebuild config dataclasses from plain dicts (recipes, checkpoints)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def as_dataclass(cls: type, value: Any) -> Any:
    """``cls(**value)`` for a dict (unknown keys raise ``TypeError`` naming them); anything else unchanged."""
    if not isinstance(value, dict):
        return value
    unknown = sorted(set(value) - {f.name for f in fields(cls)})
    if unknown:
        raise TypeError(f"unknown {cls.__name__} keys {unknown}")
    return cls(**value)

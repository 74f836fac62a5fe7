"""Action spaces the planners search over.

Two kinds, matching the action layouts in :mod:`thinkjepa.protocols`:

* :class:`DiscreteSpace`: ``n`` action ids, optionally restricted to a subset the planner may use
  (BabyAI navigation plans over left/right/forward/toggle = ``(0, 1, 2, 5)`` of 7 ids). Plans are
  ``long (B, H)``; relaxed plans are probabilities ``(B, H, n)`` over *all* ``n`` ids, with zero mass
  outside the subset, so the world model never needs to know about the restriction.
* :class:`BoxSpace`: ``dim``-dimensional continuous actions inside finite bounds. Plans are
  ``float (B, H, dim)``. Bounds must be finite because every planner scales its search to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DiscreteSpace:
    """``n`` discrete actions, of which the planner may use ``allowed`` (all of them by default).

    Args:
        n: Number of action ids the world model knows (``K`` in relaxed ``(B, H, K)`` actions).
        allowed: Sorted-or-not, duplicate-free ids in ``[0, n)`` the planner may emit; ``None`` for all.
    """

    n: int
    allowed: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"DiscreteSpace.n must be a positive int, got {self.n!r}")
        if self.allowed is None:
            return
        allowed = tuple(int(a) for a in self.allowed)
        if not allowed:
            raise ValueError("DiscreteSpace.allowed is empty; pass None to allow all actions")
        bad = [a for a in allowed if not 0 <= a < self.n]
        if bad:
            raise ValueError(f"DiscreteSpace.allowed has ids {bad} outside [0, {self.n})")
        if len(set(allowed)) != len(allowed):
            raise ValueError(f"DiscreteSpace.allowed has duplicate ids: {allowed}")
        object.__setattr__(self, "allowed", tuple(sorted(allowed)))

    @property
    def allowed_ids(self) -> tuple[int, ...]:
        """The ids the planner may emit, sorted."""
        return tuple(range(self.n)) if self.allowed is None else self.allowed

    @property
    def num_allowed(self) -> int:
        """How many ids the planner may emit."""
        return len(self.allowed_ids)

    def ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Allowed ids as a ``long (num_allowed,)`` tensor."""
        return torch.tensor(self.allowed_ids, dtype=torch.long, device=device)

    def uniform(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The uniform distribution over the allowed ids, as ``(n,)`` probabilities (zero elsewhere)."""
        probs = torch.zeros(self.n, dtype=dtype, device=device)
        probs[self.ids(device)] = 1.0 / self.num_allowed
        return probs

    def check(self, actions: torch.Tensor, batch: int, horizon: int, name: str = "actions") -> None:
        """Raise ``ValueError`` unless ``actions`` is a ``long (batch, horizon)`` plan of allowed ids."""
        if actions.dtype != torch.long or tuple(actions.shape) != (batch, horizon):
            raise ValueError(
                f"{name} for a DiscreteSpace must be long ({batch}, {horizon}), "
                f"got {actions.dtype} {tuple(actions.shape)}"
            )
        ok = torch.isin(actions, self.ids(actions.device))
        if not bool(ok.all()):
            bad = sorted(set(actions[~ok].tolist()))
            raise ValueError(f"{name} contains ids {bad} not in the allowed set {self.allowed_ids}")


class BoxSpace:
    """Continuous actions in ``[low, high]^dim``.

    Args:
        low: Lower bound, one float for every dimension or a sequence of ``dim`` floats.
        high: Upper bound, same layout as ``low``; must be strictly above ``low`` everywhere.
        dim: Action dimension ``A``.
    """

    def __init__(self, low: float | Sequence[float], high: float | Sequence[float], dim: int) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"BoxSpace.dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.low = self._per_dim(low, "low")
        self.high = self._per_dim(high, "high")
        bad = [i for i, (lo, hi) in enumerate(zip(self.low, self.high)) if not lo < hi]
        if bad:
            raise ValueError(f"BoxSpace needs low < high in every dimension; not so in dims {bad}")

    def _per_dim(self, value: float | Sequence[float], name: str) -> tuple[float, ...]:
        values = (float(value),) * self.dim if isinstance(value, int | float) else tuple(map(float, value))
        if len(values) != self.dim:
            raise ValueError(f"BoxSpace.{name} has {len(values)} entries, expected dim={self.dim}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"BoxSpace.{name} must be finite (planners scale their search to it), got {values}"
            )
        return values

    def bounds(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low (A,), high (A,))`` as tensors."""
        low = torch.tensor(self.low, dtype=dtype, device=device)
        return low, torch.tensor(self.high, dtype=dtype, device=device)

    def center_and_half_width(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(center (A,), half_width (A,))``: planners express spreads in half-widths of the box."""
        low, high = self.bounds(device, dtype)
        return (low + high) / 2, (high - low) / 2

    def check(self, actions: torch.Tensor, batch: int, horizon: int, name: str = "actions") -> None:
        """Raise ``ValueError`` unless ``actions`` is a floating ``(batch, horizon, dim)`` plan."""
        if not actions.is_floating_point() or tuple(actions.shape) != (batch, horizon, self.dim):
            raise ValueError(
                f"{name} for a BoxSpace must be float ({batch}, {horizon}, {self.dim}), "
                f"got {actions.dtype} {tuple(actions.shape)}"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoxSpace) and (self.low, self.high, self.dim) == (
            other.low,
            other.high,
            other.dim,
        )

    def __hash__(self) -> int:
        return hash((self.low, self.high, self.dim))

    def __repr__(self) -> str:
        return f"BoxSpace(low={self.low}, high={self.high}, dim={self.dim})"


ActionSpace = DiscreteSpace | BoxSpace
"""Any space a planner accepts."""

"""Thinker datasets extended by extra samples (generated grounding layouts, counterfactual instructions),
and the grounding labels of a sample that has none."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

NO_PIXEL = torch.tensor([-1, -1])
UNGROUNDED = {"target_pixel": NO_PIXEL, "waypoint_pixel": NO_PIXEL}
"""The grounding labels of a sample that has none: the named object's and the subgoal's agent cell centre,
known for generated grounding samples only (:class:`WithGrounding`)."""


class ExtendedDataset(Dataset):
    """A thinker dataset followed by extra training samples, with the same interface.

    Subclasses say what the ``j``-th extra sample is (:meth:`extra_current`, :meth:`extra_subgoal`,
    :meth:`extra_item`); indices past the base dataset's length are extra samples.
    """

    def __init__(self, base: Any, n_extra: int) -> None:
        self.base, self.n_extra = base, n_extra
        self.store, self.episodes, self.source = base.store, base.episodes, base.source
        self.fallback_k = base.fallback_k

    @property
    def fallback_fraction(self) -> float:
        return self.base.fallback_fraction * len(self.base) / max(len(self), 1)

    def __len__(self) -> int:
        return len(self.base) + self.n_extra

    def current_image(self, k: int) -> np.ndarray:
        return self.base.current_image(k) if k < len(self.base) else self.extra_current(k - len(self.base))

    def subgoal_image(self, k: int) -> np.ndarray:
        return self.base.subgoal_image(k) if k < len(self.base) else self.extra_subgoal(k - len(self.base))

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.base[k] if k < len(self.base) else {"index": k, **self.extra_item(k - len(self.base))}

    def extra_current(self, j: int) -> np.ndarray:
        raise NotImplementedError

    def extra_subgoal(self, j: int) -> np.ndarray:
        raise NotImplementedError

    def extra_item(self, j: int) -> dict[str, Any]:
        """``image``, ``mission``, ``episode``, ``target_pixel`` and ``waypoint_pixel`` of extra sample ``j``."""
        raise NotImplementedError

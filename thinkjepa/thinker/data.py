"""(current frame, mission, subgoal frame) samples for the thinker, split by episode.

Every step ``t < T`` of every episode is a sample (``stride`` thins them). Its subgoal image comes from
:meth:`~thinkjepa.data.episodes.EpisodeStore.subgoal_frame`:

* ``bot``: the episode's own frame where the BabyAI bot's active subgoal completes;
* ``waypoint``: a render of the next full-grid shortest-path waypoint (a door crossing or the final
  approach), which need not be a frame of the episode.

Where the source does not apply (no bot subgoal / waypoint segment of the episode's metadata covers ``t``)
the sample falls back to the frame ``fallback_k`` steps ahead.

The split is by *episode* (stratified by level), so validation frames never come from a training
episode. Latents are not computed here: the world model belongs to the LightningModule, which encodes
:meth:`SubgoalDataset.current_image` / :meth:`SubgoalDataset.subgoal_image` once in its ``setup``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from thinkjepa.data.grounding import GroundingSamples, Naming, grounding_samples
from thinkjepa.thinker.extended import UNGROUNDED, ExtendedDataset

SubgoalSource = Literal["bot", "waypoint"]
class SubgoalDataset(Dataset):
    """Thinker samples from some episodes of an episode store.

    Args:
        store: An :class:`~thinkjepa.data.episodes.EpisodeStore` (or anything with its interface).
        episodes: Which episodes to draw samples from.
        source: ``bot`` or ``waypoint`` subgoals.
        fallback_k: Steps ahead of the fallback target.
        stride: Keep every ``stride``-th step of each episode.
    """

    def __init__(
        self, store: Any, episodes: Sequence[int], source: SubgoalSource, fallback_k: int = 4, stride: int = 1
    ) -> None:
        if source not in ("bot", "waypoint"):
            raise ValueError(f"subgoal_source must be 'bot' or 'waypoint', got {source!r}")
        if fallback_k < 1 or stride < 1:
            raise ValueError(f"fallback_k and stride must be >= 1, got {fallback_k=} {stride=}")
        self.store, self.source, self.fallback_k = store, source, fallback_k
        self.episodes = [int(e) for e in episodes]
        self.samples = [(e, t) for e in self.episodes for t in range(0, store.meta(e).num_steps, stride)]
        self._fallback = [self._falls_back(e, t) for e, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> dict[str, Any]:
        e, _ = self.samples[k]
        return {
            "image": torch.from_numpy(self.current_image(k)),  # uint8 (H, W, 3)
            "mission": self.store.meta(e).mission,
            "index": k,
            "episode": e,
            **UNGROUNDED,
        }

    @property
    def fallback_fraction(self) -> float:
        """Share of samples whose target is the ``fallback_k``-ahead frame."""
        return float(np.mean(self._fallback)) if self._fallback else 0.0

    def _segments(self, e: int) -> Sequence[Any]:
        return getattr(self.store.meta(e), "subgoals" if self.source == "bot" else "waypoints", ())

    def _falls_back(self, e: int, t: int) -> bool:
        return not any(s.start <= t < s.end for s in self._segments(e))

    def current_image(self, k: int) -> np.ndarray:
        """``uint8 (H, W, 3)`` frame of sample ``k``."""
        e, t = self.samples[k]
        return np.array(self.store.frames(e)[t])  # a writable copy of the memmap row

    def subgoal_image(self, k: int) -> np.ndarray:
        """``uint8 (H, W, 3)`` subgoal frame of sample ``k`` (the fallback frame where the source does not apply)."""
        e, t = self.samples[k]
        if self._fallback[k]:
            return np.asarray(self.store.frames(e)[min(t + self.fallback_k, self.store.meta(e).num_steps)])
        return np.asarray(self.store.subgoal_frame(e, t, source=self.source))

    def candidate_images(self, e: int) -> np.ndarray:
        """``uint8 (N, H, W, 3)``: what retrieval must tell the true subgoal apart from, for episode ``e``.

        All frames of the episode, plus (``waypoint`` source) each of its distinct waypoint renders.
        """
        frames = np.asarray(self.store.frames(e))
        if self.source == "bot":
            return frames
        starts = sorted({s.start for s in self._segments(e)})
        renders = [np.asarray(self.store.subgoal_frame(e, t, source="waypoint")) for t in starts]
        return np.concatenate([frames, np.stack(renders)]) if renders else frames


class WithGrounding(ExtendedDataset):
    """A thinker dataset followed by grounding samples of the level generator (:mod:`thinkjepa.data.grounding`).

    Each extra sample is a random layout and agent state with a uniquely named object; its subgoal is the
    rendered next waypoint, and its item carries ``target_pixel`` and ``waypoint_pixel``, the centres of the
    named object's and the waypoint's cells, for the thinker's grounding losses (episode ``-1``: it belongs to no recorded episode).
    """

    def __init__(self, base: Any, samples: GroundingSamples) -> None:
        if samples.subgoal_frames is None:
            raise ValueError("WithGrounding needs grounding samples rendered with_subgoals=True")
        super().__init__(base, len(samples))
        self.samples_extra = samples

    def extra_current(self, j: int) -> np.ndarray:
        return self.samples_extra.frames[j]

    def extra_subgoal(self, j: int) -> np.ndarray:
        return self.samples_extra.subgoal_frames[j]  # type: ignore[index]

    def extra_item(self, j: int) -> dict[str, Any]:
        return {
            "image": torch.from_numpy(self.samples_extra.frames[j]),
            "mission": self.samples_extra.missions[j],
            "episode": -1,
            "target_pixel": torch.from_numpy(self.samples_extra.target_pixels[j]),
            "waypoint_pixel": torch.from_numpy(self.samples_extra.waypoint_pixels[j]),
        }


def split_episodes(levels: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split episode indices into train/val, per level, so every level with 2+ episodes is in both.

    Args:
        levels: The level of each episode (index = episode).
        val_fraction: Share of each level's episodes held out (at least one when the level has 2+).
        seed: Seed of the shuffle.

    Returns:
        ``(train, val)`` sorted episode indices.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_level: dict[str, list[int]] = defaultdict(list)
    for i, level in enumerate(levels):
        by_level[level].append(i)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for level in sorted(by_level):
        idx = rng.permutation(by_level[level]).tolist()
        n_val = 0 if val_fraction == 0 or len(idx) < 2 else max(1, round(val_fraction * len(idx)))
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def grounding_part(job: tuple[str, int, int, int, Naming]) -> GroundingSamples:
    """One seeded part of the generated grounding samples (a process pool's task)."""
    level, n, seed, image_size, naming = job
    return grounding_samples(level, n, seed=seed, image_size=image_size, with_subgoals=True, naming=naming)


def even_split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal counts (the first ones get the remainder)."""
    return [total // parts + (i < total % parts) for i in range(parts)]

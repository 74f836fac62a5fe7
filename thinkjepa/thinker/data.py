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

import multiprocessing
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.grounding import GroundingSamples, Naming, check_naming, grounding_samples
from thinkjepa.thinker.counterfactual import WithCounterfactuals, counterfactuals
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


class ThinkerDataModule(pl.LightningDataModule):
    """Thinker samples from an episode dataset, split by episode.

    Args:
        root: Episode dataset directory (written by ``thinkjepa collect``).
        subgoal_source: ``bot`` (the bot's subgoal completions) or ``waypoint`` (shortest-path waypoints).
        batch_size: Samples per batch.
        val_fraction: Share of each level's episodes held out for validation.
        seed: Seed of the episode split.
        fallback_k: Steps ahead of the target where the subgoal source does not apply.
        stride: Keep every ``stride``-th step of each episode.
        max_episodes: Use only the first this many episodes (``None``: all).
        num_workers: DataLoader workers.
        val_levels: Validate on the held-out episodes of these levels only (``None``: every level),
            e.g. ``[BabyAI-GoTo-v0]`` to score the thinker where the instruction decides the route.
        counterfactuals_per_frame: Add this many counterfactual missions per chosen training frame
            (another object named, that object's waypoint; see :mod:`thinkjepa.thinker.counterfactual`).
            Validation is never augmented.
        counterfactual_every: Choose the first frame of each episode and every this-many-th (0: first only).
        grounding_samples: Add this many samples of the level generator to training (random layouts and
            agent states, a uniquely named object, its next waypoint rendered; see
            :mod:`thinkjepa.data.grounding`), split evenly over ``grounding_levels``. They also carry the
            named object's pixel for the thinker's grounding loss. Validation is never augmented.
        grounding_levels: Levels to draw them from (``None``: every level of the dataset).
        grounding_seed: Reset seed of the first generated layout (far from collection and evaluation seeds).
        grounding_naming: How they name objects (:func:`~thinkjepa.data.grounding.grounding_samples`):
            ``unique`` ("go to the red ball") or ``level`` (as BabyAI does, "a red ball" when there are several).
        grounding_chunks: Draw each level's samples as this many independently seeded parts. Part ``k``
            (counting over levels, then parts) starts at layout ``grounding_seed + 1_000_000 * k``, so the
            samples depend on this number but never on how many processes made them; ``1`` draws one part
            per level. Several parts are made in forked processes (one per CPU at most), one in this process.
    """

    def __init__(
        self,
        root: str,
        subgoal_source: SubgoalSource = "waypoint",
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        fallback_k: int = 4,
        stride: int = 1,
        max_episodes: int | None = None,
        num_workers: int = 0,
        val_levels: list[str] | None = None,
        counterfactuals_per_frame: int = 0,
        counterfactual_every: int = 0,
        grounding_samples: int = 0,
        grounding_levels: list[str] | None = None,
        grounding_seed: int = 50_000_000,
        grounding_naming: Naming = "unique",
        grounding_chunks: int = 1,
    ) -> None:
        super().__init__()
        self.root, self.subgoal_source, self.batch_size = root, subgoal_source, batch_size
        self.val_fraction, self.seed, self.fallback_k, self.stride = val_fraction, seed, fallback_k, stride
        self.max_episodes, self.num_workers = max_episodes, num_workers
        self.val_levels = None if val_levels is None else list(val_levels)
        if counterfactuals_per_frame < 0 or counterfactual_every < 0:
            raise ValueError(f"counterfactuals need values >= 0, got {counterfactuals_per_frame=} {counterfactual_every=}")
        self.counterfactuals_per_frame, self.counterfactual_every = counterfactuals_per_frame, counterfactual_every
        if grounding_samples < 0:
            raise ValueError(f"grounding_samples must be >= 0, got {grounding_samples}")
        if grounding_chunks < 1:
            raise ValueError(f"grounding_chunks must be >= 1, got {grounding_chunks}")
        self.grounding_samples, self.grounding_seed = grounding_samples, grounding_seed
        self.grounding_chunks = grounding_chunks
        check_naming(grounding_naming, "grounding_naming")  # now, not only when setup() generates them
        self.grounding_naming = grounding_naming
        self.grounding_levels = None if grounding_levels is None else list(grounding_levels)
        self.train_set: SubgoalDataset | None = None
        self.val_set: SubgoalDataset | None = None

    def open_store(self) -> Any:
        """The episode store at ``root`` (a hook: tests substitute a small fake store)."""
        return EpisodeStore(self.root)

    @property
    def image_size(self) -> int:
        """Side of the dataset's frames (available after ``setup``)."""
        if self.train_set is None:
            raise RuntimeError("ThinkerDataModule.image_size is known only after setup()")
        return self.train_set.store.image_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        store = self.open_store()
        n = len(store) if self.max_episodes is None else min(len(store), self.max_episodes)
        levels = [store.meta(i).level for i in range(n)]
        train, val = split_episodes(levels, self.val_fraction, self.seed)
        if self.val_levels is not None:
            val = [i for i in val if levels[i] in self.val_levels]
            if not val:
                raise ValueError(
                    f"No held-out episodes of val_levels={self.val_levels} in {self.root} "
                    f"(its levels: {sorted(set(levels))})"
                )
        self.train_set = SubgoalDataset(store, train, self.subgoal_source, self.fallback_k, self.stride)
        self.val_set = SubgoalDataset(store, val, self.subgoal_source, self.fallback_k, self.stride)
        if self.counterfactuals_per_frame:

            extra = counterfactuals(store, train, self.counterfactuals_per_frame, self.counterfactual_every, self.seed)
            self.train_set = WithCounterfactuals(self.train_set, extra)
        if self.grounding_samples:
            self.train_set = WithGrounding(self.train_set, self._grounding(sorted(set(levels)), store.image_size))
        if len(self.train_set) == 0:
            raise ValueError(f"No training samples in {self.root}: {n} episodes, {len(train)} for training")

    def _grounding(self, dataset_levels: list[str], image_size: int) -> GroundingSamples:
        levels = self.grounding_levels or dataset_levels
        parts = [
            (level, n)
            for level, per_level in zip(levels, _even_split(self.grounding_samples, len(levels)), strict=True)
            for n in _even_split(per_level, self.grounding_chunks)
        ]
        jobs = [
            (level, n, self.grounding_seed + 1_000_000 * k, image_size, self.grounding_naming)
            for k, (level, n) in enumerate(parts)
            if n
        ]
        processes = min(len(jobs), os.cpu_count() or 1)
        if processes <= 1:
            return GroundingSamples.concatenate([_grounding_part(job) for job in jobs])
        with multiprocessing.get_context("fork").Pool(processes) as pool:  # layouts are CPU-bound Python
            return GroundingSamples.concatenate(pool.map(_grounding_part, jobs))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )


def _grounding_part(job: tuple[str, int, int, int, Naming]) -> GroundingSamples:
    """One seeded part of the generated grounding samples (a process pool's task)."""
    level, n, seed, image_size, naming = job
    return grounding_samples(level, n, seed=seed, image_size=image_size, with_subgoals=True, naming=naming)


def _even_split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal counts (the first ones get the remainder)."""
    return [total // parts + (i < total % parts) for i in range(parts)]

"""``ThinkerDataModule``: the thinker's (frame, mission, subgoal frame) samples as Lightning loaders.

The samples themselves (and the split by episode) are in :mod:`thinkjepa.thinker.data`.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.grounding import GroundingSamples, Naming, check_naming
from thinkjepa.thinker.counterfactual import WithCounterfactuals, counterfactuals
from thinkjepa.thinker.data import (
    SubgoalDataset,
    SubgoalSource,
    WithGrounding,
    even_split,
    grounding_part,
    split_episodes,
)


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
            for level, per_level in zip(levels, even_split(self.grounding_samples, len(levels)), strict=True)
            for n in even_split(per_level, self.grounding_chunks)
        ]
        jobs = [
            (level, n, self.grounding_seed + 1_000_000 * k, image_size, self.grounding_naming)
            for k, (level, n) in enumerate(parts)
            if n
        ]
        processes = min(len(jobs), os.cpu_count() or 1)
        if processes <= 1:
            return GroundingSamples.concatenate([grounding_part(job) for job in jobs])
        with multiprocessing.get_context("fork").Pool(processes) as pool:  # layouts are CPU-bound Python
            return GroundingSamples.concatenate(pool.map(grounding_part, jobs))

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

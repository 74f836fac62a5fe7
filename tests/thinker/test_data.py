"""Thinker samples and the episode-level split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.thinker.data import SubgoalDataset, ThinkerDataModule, split_episodes


def test_split_is_by_episode_and_covers_every_level() -> None:
    levels = ["a"] * 10 + ["b"] * 3 + ["c"]
    train, val = split_episodes(levels, val_fraction=0.2, seed=0)
    assert not set(train) & set(val) and sorted(train + val) == list(range(14))
    assert {levels[i] for i in val} == {"a", "b"} and len(val) == 3  # "c" has one episode: training only
    assert split_episodes(levels, 0.2, seed=0) == (train, val) != split_episodes(levels, 0.2, seed=1)
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(levels, 1.0, seed=0)


@pytest.mark.parametrize("source", ["bot", "waypoint"])
def test_datamodule_samples_subgoals_from_held_out_episodes(dataset_dir, source: str) -> None:
    dm = ThinkerDataModule(str(dataset_dir), subgoal_source=source, batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    store = dm.train_set.store
    assert not set(dm.train_set.episodes) & set(dm.val_set.episodes) and dm.val_set.episodes
    assert len(dm.train_set) == sum(store.meta(e).num_steps for e in dm.train_set.episodes)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 88, 88, 3)
    assert len(batch["mission"]) == 4 and batch["index"].shape == (4,)
    ds = dm.val_set
    for k, (e, t) in enumerate(ds.samples):
        np.testing.assert_array_equal(ds.current_image(k), store.frames(e)[t])
        np.testing.assert_array_equal(ds.subgoal_image(k), store.subgoal_frame(e, t, source))
        candidates = ds.candidate_images(e)
        assert (candidates == ds.subgoal_image(k)).all(axis=(1, 2, 3)).any()  # the truth is a candidate
    assert ds.fallback_fraction == 0.0


def test_validation_can_be_restricted_to_levels(dataset_dir) -> None:
    dm = ThinkerDataModule(str(dataset_dir), val_fraction=0.25, val_levels=["BabyAI-GoToRedBallGrey-v0"])
    dm.setup("fit")
    store = dm.train_set.store
    assert dm.val_set.episodes and {store.meta(e).level for e in dm.val_set.episodes} == {"BabyAI-GoToRedBallGrey-v0"}
    with pytest.raises(ValueError, match=r"No held-out episodes of val_levels=\['BabyAI-GoTo-v0'\]"):
        ThinkerDataModule(str(dataset_dir), val_levels=["BabyAI-GoTo-v0"]).setup("fit")


def test_steps_no_subgoal_covers_fall_back_k_steps_ahead(dataset_dir) -> None:
    store = EpisodeStore(dataset_dir)

    class NoSegments:  # a store whose metadata has no bot subgoal segments
        def __getattr__(self, name):
            return getattr(store, name)

        def meta(self, i):
            m = store.meta(i)
            return type("M", (), {"num_steps": m.num_steps, "mission": m.mission, "subgoals": ()})()

    ds = SubgoalDataset(NoSegments(), [0], "bot", fallback_k=2)
    assert ds.fallback_fraction == 1.0
    steps = store.meta(0).num_steps
    for k, (_, t) in enumerate(ds.samples):
        np.testing.assert_array_equal(ds.subgoal_image(k), store.frames(0)[min(t + 2, steps)])

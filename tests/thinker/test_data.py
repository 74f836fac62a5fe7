"""Thinker samples and the episode-level split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from thinker_helpers import IMAGE_SIZE

from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.grounding import grounding_samples
from thinkjepa.thinker.data import SubgoalDataset, split_episodes
from thinkjepa.train.thinker_data import ThinkerDataModule


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


def test_counterfactual_missions_name_other_objects_with_their_own_waypoints(dataset_dir) -> None:
    from thinkjepa.data.collect import WaypointFrames
    from thinkjepa.data.grounding import object_cells
    from thinkjepa.envs.babyai import make_env
    from thinkjepa.thinker.counterfactual import counterfactuals

    store = EpisodeStore(dataset_dir)
    episodes = list(range(len(store)))
    extra = counterfactuals(store, episodes, per_episode=3, every=2, seed=0)
    assert extra and {c.t for c in extra} > {0}  # later frames are reached by replaying the actions
    layouts = {}
    for c in extra:
        meta = store.meta(c.episode)
        if c.episode not in layouts:  # objects stay put in GoTo levels: the reset layout counts them
            env = make_env(meta.level, image_size=store.image_size)
            env.reset(seed=meta.seed)
            layouts[c.episode] = object_cells(env.unwrapped.grid)
            env.close()
        article, color, kind = c.mission.removeprefix("go to ").split()
        assert f"{color} {kind}" not in meta.mission
        assert article == ("the" if len(layouts[c.episode][(color, kind)]) == 1 else "a")  # BabyAI's rule
        assert c.t < meta.num_steps and c.subgoal.shape == store.frames(c.episode)[0].shape
    # the label is what the collector's own labeler gives for that mission from that frame
    c = next(c for c in extra if c.t == 0)
    env = make_env(store.meta(c.episode).level, image_size=store.image_size)
    env.reset(seed=store.meta(c.episode).seed)
    env.unwrapped.instrs.desc.color, env.unwrapped.instrs.desc.type = c.mission.split()[-2:]
    env.unwrapped.instrs.desc.find_matching_objs(env.unwrapped)
    labeler = WaypointFrames(env)
    np.testing.assert_array_equal(labeler.frames[labeler.label()], c.subgoal)
    env.close()


def test_datamodule_adds_counterfactuals_to_training_only(dataset_dir) -> None:
    plain = ThinkerDataModule(str(dataset_dir), val_fraction=0.25)
    plain.setup("fit")
    dm = ThinkerDataModule(str(dataset_dir), val_fraction=0.25, counterfactuals_per_frame=2)
    dm.setup("fit")
    assert len(dm.val_set) == len(plain.val_set) and len(dm.train_set) > len(plain.train_set)
    k = len(dm.train_set) - 1
    item = dm.train_set[k]
    assert item["index"] == k and item["mission"] == dm.train_set.extra[-1].mission
    np.testing.assert_array_equal(dm.train_set.subgoal_image(k), dm.train_set.extra[-1].subgoal)
    with pytest.raises(ValueError, match="counterfactuals need values >= 0"):
        ThinkerDataModule(str(dataset_dir), counterfactuals_per_frame=-1)


def test_grounding_samples_follow_the_naming_asked_for(dataset_dir) -> None:
    missions = {}
    for naming in ("unique", "level"):
        dm = ThinkerDataModule(str(dataset_dir), val_fraction=0.25, grounding_samples=40,
                               grounding_levels=["BabyAI-GoTo-v0"], grounding_naming=naming)
        dm.setup("fit")
        base = len(dm.train_set) - 40
        missions[naming] = [dm.train_set[base + j]["mission"] for j in range(40)]
    assert all(m.startswith("go to the ") for m in missions["unique"])
    assert any(m.startswith("go to a ") for m in missions["level"])
    with pytest.raises(ValueError, match="grounding_naming must be 'unique' or 'level'"):
        ThinkerDataModule(str(dataset_dir), grounding_naming="nearest")


def test_grounding_chunks_are_seeded_parts_made_in_parallel(dataset_dir, monkeypatch) -> None:
    level = "BabyAI-GoTo-v0"
    parts = [grounding_samples(level, n, seed=7_000 + 1_000_000 * k, image_size=IMAGE_SIZE, with_subgoals=True)
             for k, n in enumerate((4, 3, 3))]
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # two processes make three parts
    dm = ThinkerDataModule(str(dataset_dir), val_fraction=0.25, grounding_samples=10, grounding_levels=[level],
                           grounding_seed=7_000, grounding_chunks=3)
    dm.setup("fit")
    got = dm.train_set.samples_extra
    assert got.seeds[0] == 7_000 and {1_007_000, 2_007_000} <= set(got.seeds.tolist())
    np.testing.assert_array_equal(got.frames, np.concatenate([p.frames for p in parts]))
    np.testing.assert_array_equal(got.subgoal_frames, np.concatenate([p.subgoal_frames for p in parts]))
    assert got.missions == [m for p in parts for m in p.missions]
    with pytest.raises(ValueError, match="grounding_chunks must be >= 1"):
        ThinkerDataModule(str(dataset_dir), grounding_chunks=0)

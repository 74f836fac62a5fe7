"""Collecting bot episodes on real BabyAI levels, read back through the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thinkjepa.data import EpisodeStore, collect
from thinkjepa.envs import ACTION_NAMES

LEVELS = ["BabyAI-GoToLocal-v0", "BabyAI-GoToObjMazeS4-v0", "BabyAI-GoTo-v0"]
SIZE = 66  # the smallest size that fits GoTo's 22x22 grid at 3 px tiles


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collect(
        LEVELS,
        episodes_per_level=3,
        out=tmp_path_factory.mktemp("c") / "ds",
        image_size=SIZE,
        epsilon=0.5,
        seed=0,
    )


def test_round_trip(dataset: Path) -> None:
    store = EpisodeStore(dataset)
    header = json.loads((dataset / "episodes.json").read_text())
    kept = {lv: sum(store.meta(i).level == lv for i in range(len(store))) for lv in LEVELS}
    dropped = header["info"]["dropped"]
    assert all(kept[lv] + sum(dropped[lv].values()) == 3 for lv in LEVELS)
    assert all(kept[lv] >= 1 for lv in LEVELS)
    assert header["tile_sizes"] == {
        "BabyAI-GoToLocal-v0": 8,
        "BabyAI-GoToObjMazeS4-v0": 6,
        "BabyAI-GoTo-v0": 3,
    }
    assert store.image_size == SIZE and store.num_actions == len(ACTION_NAMES)
    for i in range(len(store)):
        m = store.meta(i)
        assert m.success and m.mission.startswith("go to") and 0 <= m.seed < 3
        assert store.frames(i).shape == (m.num_steps + 1, SIZE, SIZE, 3)
        assert ((store.actions(i) >= 0) & (store.actions(i) < len(ACTION_NAMES))).all()


def test_frames_show_the_agent_turning(dataset: Path) -> None:
    store = EpisodeStore(dataset)
    turns = 0
    for i in range(len(store)):
        frames, actions = store.frames(i), store.actions(i)
        for t in np.flatnonzero(actions <= 1):  # left / right always change the heading
            assert not np.array_equal(frames[t], frames[t + 1]), f"episode {i} step {t}"
            turns += 1
    assert turns > 0


def test_epsilon_mixes_expert_and_random_steps(dataset: Path) -> None:
    store = EpisodeStore(dataset)
    expert = np.concatenate([store.expert(i) for i in range(len(store))])
    assert expert.any() and (~expert).any()


def test_subgoal_labels(dataset: Path) -> None:
    store = EpisodeStore(dataset)
    ends = np.load(dataset / "bot_subgoal_end.npy")
    for i in range(len(store)):
        m = store.meta(i)
        local = ends[m.start : m.start + m.num_frames]
        assert (local >= np.arange(m.num_frames)).all() and (local <= m.num_steps).all()
        segments = m.subgoals
        assert segments[0].start == 0 and segments[-1].end == m.num_steps
        assert all(a.end == b.start for a, b in zip(segments[:-1], segments[1:]))
        assert all(s.kind.endswith("Subgoal") for s in segments)
        # the final subgoal is the mission's target, reached on the last frame
        assert segments[-1].kind == "GoNextToSubgoal" and segments[-1].target in m.mission
        # on success the agent faces the target: the last waypoint is the agent's own final state
        assert np.array_equal(store.subgoal_frame(i, m.num_steps, "waypoint"), store.frames(i)[-1])
        assert all(a.end == b.start for a, b in zip(m.waypoints[:-1], m.waypoints[1:]))


def test_door_levels_have_door_waypoints(dataset: Path) -> None:
    store = EpisodeStore(dataset)
    multi = [i for i in range(len(store)) if store.meta(i).level != "BabyAI-GoToLocal-v0"]
    assert max(len({w.index for w in store.meta(i).waypoints}) for i in multi) > 1


def test_refuses_to_overwrite(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        collect(LEVELS[:1], 1, dataset, image_size=SIZE)
    out = collect(LEVELS[:1], 2, tmp_path / "a", seed=5)
    first = np.load(out / "frames.npy")
    again = collect(LEVELS[:1], 2, out, seed=5, overwrite=True)  # same seeds: same episodes
    assert np.array_equal(np.load(again / "frames.npy"), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with pytest.raises(ValueError, match="image_size >= 66"):
        collect(["BabyAI-GoTo-v0"], 1, tmp_path / "b", image_size=64)
    assert not (tmp_path / "b").exists()


def test_all_dropped_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every attempt was dropped.*failed"):
        collect(LEVELS[:1], 2, tmp_path / "ds", epsilon=0.0, max_steps=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("recipe", sorted(str(p) for p in (Path(__file__).resolve().parents[2] / "recipes/data").glob("*.yaml")))
def test_every_data_recipe_collects_its_levels(recipe: str, tmp_path: Path) -> None:
    """Each data recipe, cut to 2 episodes (a level): the dataset holds the recipe's levels or environment, image
    size and seeds."""
    import yaml

    from thinkjepa.cli import main

    spec = yaml.safe_load(Path(recipe).read_text())
    out = tmp_path / "data"
    if "env_id" in spec:  # a stable-worldmodel environment
        pytest.importorskip("stable_worldmodel", reason="the swm extra is not installed (make install-swm)")
        main(["collect-swm", "--config", recipe, "--episodes=2", "--steps=10", f"--out={out}"])
        store = EpisodeStore(str(out))
        assert len(store) == 2 and store.action_space == "continuous" and store.meta(0).level == spec["env_id"]
        assert store.image_size == spec["image_size"] and store.meta(0).seed == spec["seed"]
        return
    main(["collect", "--config", recipe, "--episodes_per_level=2", f"--out={out}"])
    store = EpisodeStore(str(out))
    assert len(store) == 2 * len(spec["levels"]) and store.image_size == spec["image_size"]
    assert sorted({store.meta(i).level for i in range(len(store))}) == sorted(spec["levels"])
    assert min(store.meta(i).seed for i in range(len(store))) >= spec.get("seed", 0)

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from thinkjepa.data.grounding import GroundingSamples, go_to_mission, grounding_samples, object_cells
from thinkjepa.data.waypoints import CLOSED_DOOR, OPEN_DOOR, AgentState, cell_kinds, shortest_path
from thinkjepa.envs.babyai import make_env

SIZE = 64


def _reset(env, seed: int):
    with contextlib.redirect_stdout(io.StringIO()):
        env.reset(seed=seed)
    return env.unwrapped.grid


def test_samples_are_reproducible_and_spread_over_names():
    a = grounding_samples("BabyAI-GoToLocal-v0", 40, seed=3, image_size=SIZE)
    b = grounding_samples("BabyAI-GoToLocal-v0", 40, seed=3, image_size=SIZE)
    assert len(a) == 40 and a.frames.shape == (40, SIZE, SIZE, 3) and a.frames.dtype == np.uint8
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.waypoints, b.waypoints)
    assert a.missions == b.missions
    words = [m.split() for m in a.missions]
    assert len({w[-2] for w in words}) >= 3 and len({w[-1] for w in words}) >= 2  # colours and types vary
    assert len(set(a.seeds.tolist())) >= 10  # many layouts, not one


def test_each_sample_names_a_unique_object_and_shows_the_agent_where_it_says():
    s = grounding_samples("BabyAI-GoToLocal-v0", 30, seed=11, image_size=SIZE, with_subgoals=True)
    env = make_env("BabyAI-GoToLocal-v0", image_size=SIZE)
    for i in range(len(s)):
        grid = _reset(env, int(s.seeds[i]))
        color, kind = s.missions[i].split()[-2:]
        assert object_cells(grid)[(color, kind)] == [tuple(s.targets[i])]  # the only such object
        x, y, d = s.agents[i]
        np.testing.assert_array_equal(s.frames[i], env.render_state((x, y), d))
        wx, wy, wd = s.waypoints[i]
        assert AgentState(wx, wy, wd).front == tuple(s.targets[i])  # one room: the waypoint faces the object
        np.testing.assert_array_equal(s.subgoal_frames[i], env.render_state((wx, wy), wd))
        r, c = s.waypoint_pixels[i]  # the waypoint pixel is inside the (red) agent of the subgoal frame
        red, green, blue = (int(v) for v in s.subgoal_frames[i][r, c])
        assert red > 200 and green < 60 and blue < 60, (i, (red, green, blue))
    env.close()


def test_multi_room_waypoints_face_the_object_or_follow_a_door():
    s = grounding_samples("BabyAI-GoTo-v0", 120, seed=5, image_size=88)
    env = make_env("BabyAI-GoTo-v0", image_size=88)
    kinds_seen = {"approach": 0, "door": 0}
    for i in range(len(s)):
        kinds = cell_kinds(_reset(env, int(s.seeds[i])))
        state = AgentState(*(int(v) for v in s.waypoints[i]))
        if state.front == tuple(s.targets[i]):
            kinds_seen["approach"] += 1
            continue
        behind = AgentState(state.x, state.y, (state.dir + 2) % 4).front  # the cell the agent came from
        assert kinds[behind] in (CLOSED_DOOR, OPEN_DOOR), (i, s.missions[i], state)
        kinds_seen["door"] += 1
    env.close()
    assert kinds_seen["approach"] and kinds_seen["door"]  # both kinds of subgoal occur


def _cost(kinds, path) -> int:
    """Actions along a shortest_path: one per move, one more to open each closed door entered."""
    return len(path) - 1 + sum(int(kinds[p.x, p.y] == CLOSED_DOOR) for p in path[1:])


def test_level_naming_says_a_when_several_match_and_heads_for_the_nearest():
    s = grounding_samples("BabyAI-GoTo-v0", 150, seed=9, image_size=88, naming="level")
    env = make_env("BabyAI-GoTo-v0", image_size=88)
    articles = {"a": 0, "the": 0}
    for i in range(len(s)):
        grid = _reset(env, int(s.seeds[i]))
        article, color, kind = s.missions[i].split()[-3:]
        matches = object_cells(grid)[(color, kind)]
        assert article == ("the" if len(matches) == 1 else "a"), (s.missions[i], matches)  # BabyAI's rule
        articles[article] += 1
        assert tuple(s.targets[i]) in matches
        kinds, start = cell_kinds(grid), AgentState(*(int(v) for v in s.agents[i]))
        costs = {m: _cost(kinds, p) for m in matches if (p := shortest_path(kinds, start, [m])) is not None}
        assert costs[tuple(s.targets[i])] == min(costs.values())  # no matching object is nearer
    env.close()
    assert articles["a"] >= 30 and articles["the"] >= 30  # both occur, as in the level's own missions
    unique = grounding_samples("BabyAI-GoTo-v0", 20, seed=9, image_size=88)
    assert all(m.startswith("go to the ") for m in unique.missions)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n >= 1"):
        grounding_samples("BabyAI-GoToLocal-v0", 0)
    with pytest.raises(ValueError, match="naming must be"):
        grounding_samples("BabyAI-GoToLocal-v0", 2, naming="any")
    with pytest.raises(ValueError, match="nameable ball, box or key"):
        grounding_samples("MiniGrid-Empty-5x5-v0", 2, image_size=SIZE)
    with pytest.raises(ValueError, match="unknown level"):
        grounding_samples("BabyAI-NoSuchLevel-v0", 2)
    with pytest.raises(ValueError, match="0 objects match 'red ball'"):
        go_to_mission("red", "ball", 0)


def test_concatenated_samples_keep_every_field_in_order():
    a = grounding_samples("BabyAI-GoToLocal-v0", 5, seed=1, image_size=SIZE, with_subgoals=True)
    b = grounding_samples("BabyAI-GoToLocal-v0", 3, seed=100, image_size=SIZE, with_subgoals=True)
    both = GroundingSamples.concatenate([a, b])
    assert len(both) == 8 and both.missions == a.missions + b.missions
    np.testing.assert_array_equal(both.subgoal_frames[5:], b.subgoal_frames)
    np.testing.assert_array_equal(both.target_pixels[:5], a.target_pixels)
    no_renders = grounding_samples("BabyAI-GoToLocal-v0", 2, seed=7, image_size=SIZE)
    assert GroundingSamples.concatenate([a, no_renders]).subgoal_frames is None

"""This project's goal agents driven by stable-worldmodel's own ``World`` (needs the swm extra)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_worldmodel", reason="the swm extra is not installed (make install-swm)")

import stable_worldmodel as swm  # noqa: E402

from thinkjepa.envs.swm import frame, make_swm_env  # noqa: E402
from thinkjepa.policy.swm_protocol import GoalProtocol, goal_episodes, run_protocol  # noqa: E402
from thinkjepa.policy.swm_world import AgentPolicy, ProtocolDataset, evaluate_in_world  # noqa: E402

ENV, SIZE = "swm/TwoRoom-v1", 32
PROTOCOL = GoalProtocol(episodes=3, goal_offset=10, eval_budget=30)


class Seeker:
    """A privileged agent that walks straight at the goal state (it reaches near goals); it keeps what it saw."""

    def __init__(self) -> None:
        self.goal, self.seen, self.resets = None, [], 0

    def reset(self, goal_frame, episode) -> None:
        self.goal, self.resets = None if episode is None else episode.goal, self.resets + 1
        self.goal_frame = goal_frame

    def plan(self, image, state):
        self.seen.append((image, state))
        step = np.clip((self.goal - state) / 10.0, -1.0, 1.0) if self.goal is not None else np.zeros(2)
        return np.repeat(step[None].astype(np.float32), 3, axis=0)  # three actions per query


class Still(Seeker):
    def plan(self, image, state):
        self.seen.append((image, state))
        return np.zeros((2, 2), np.float32)


@pytest.fixture(scope="module")
def dataset() -> ProtocolDataset:
    return ProtocolDataset.build(ENV, PROTOCOL, SIZE)


def test_the_protocol_dataset_holds_each_trajectory_from_start_to_goal(dataset) -> None:
    env = make_swm_env(ENV)
    episodes = goal_episodes(ENV, env, PROTOCOL, SIZE)
    assert dataset.column_names == ["pixels", "state", "action", "episode_seed"]
    for ep, data in zip(episodes, dataset.data, strict=True):
        assert data["pixels"].shape == (PROTOCOL.goal_offset + 1, 3, SIZE, SIZE) and data["pixels"].dtype == np.uint8
        np.testing.assert_array_equal(data["state"][0], ep.start)
        np.testing.assert_array_equal(data["state"][-1], ep.goal)
        np.testing.assert_array_equal(data["pixels"][-1].transpose(1, 2, 0), ep.goal_frame)
    chunk = dataset.load_chunk(np.array([1]), np.array([0]), np.array([PROTOCOL.goal_offset + 1]))[0]
    assert tuple(chunk["pixels"].shape) == (PROTOCOL.goal_offset + 1, 3, SIZE, SIZE)  # a tensor, as World expects


def test_world_drives_the_agents_on_the_frames_this_project_renders(dataset) -> None:
    """World's evaluation: each env's agent gets the goal frame of its trajectory, frames equal to this project's
    renderer at the true state, and its queued actions one per step; the seeker reaches goals, standing still
    does not, and the same agents in this project's own loop score the same."""
    agents: list[Seeker] = []

    def make(cls):
        def build():
            agents.append(cls())
            return agents[-1]
        return build

    seeker = evaluate_in_world(make(Seeker), ENV, PROTOCOL, SIZE, num_envs=3, pass_episode=True, dataset=dataset)
    assert seeker["episodes"] == 3 and seeker["successes"] == 3 and seeker["queries_per_episode"] >= 1
    env = make_swm_env(ENV)
    for agent, data in zip(agents, dataset.data, strict=True):
        assert agent.resets == 1
        np.testing.assert_array_equal(agent.goal_frame.transpose(2, 0, 1), data["pixels"][-1])
        np.testing.assert_array_equal(agent.seen[0][0].transpose(2, 0, 1), data["pixels"][0])
        np.testing.assert_array_equal(agent.seen[0][1], data["state"][0])
        for image, state in agent.seen[1:]:  # later frames: World's renderer at the state reached
            env.reset(seed=0, options={"state": state, "target_state": data["state"][-1]})
            np.testing.assert_array_equal(image, frame(env, SIZE))
    agents.clear()
    still = evaluate_in_world(make(Still), ENV, PROTOCOL, SIZE, num_envs=2, dataset=dataset)
    assert still["successes"] == 0 and still["episode_successes"] == [False] * 3
    ours = run_protocol(ENV, Seeker(), PROTOCOL, SIZE)  # this loop passes the episode too
    assert [r["success"] for r in ours] == seeker["episode_successes"]


def test_an_agent_policy_without_goal_frames_says_what_it_needs() -> None:
    world = swm.World(ENV, num_envs=1, image_shape=(SIZE, SIZE), max_episode_steps=5, disable_env_checker=True)
    policy = AgentPolicy(Still)
    world.set_policy(policy)
    world.reset(seed=0)
    with pytest.raises(KeyError, match="goal"):
        policy.get_action(world.infos)
    world.close()
    with pytest.raises(RuntimeError, match="set_env"):
        AgentPolicy(Still).get_action({})

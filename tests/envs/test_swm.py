"""stable-worldmodel environments through this project's frames and episode store (needs the swm extra)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_worldmodel", reason="the swm extra is not installed (make install-swm)")

from thinkjepa.data.episodes import EpisodeStore  # noqa: E402
from thinkjepa.envs.swm import (  # noqa: E402
    collect_swm,
    frame,
    make_swm_env,
    place,
    tworoom_doors,
    tworoom_path_length,
    tworoom_states,
)


def test_tworoom_expert_episodes_land_in_the_store_with_continuous_actions(tmp_path) -> None:
    out = collect_swm("swm/TwoRoom-v1", 2, tmp_path / "tworoom", steps=40, image_size=32, noise=0.3, seed=100_005)
    store = EpisodeStore(out)
    assert len(store) == 2 and store.image_size == 32 and store.action_space == "continuous"
    low, high = store.action_box
    assert low.tolist() == [-1.0, -1.0] and high.tolist() == [1.0, 1.0]
    assert [store.meta(i).num_steps for i in range(2)] == [40, 40] and store.meta(1).seed == 100_006
    frames = store.frames(0)
    assert frames.dtype == np.uint8 and frames.shape == (41, 32, 32, 3)
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])  # the agent moves
    again = collect_swm("swm/TwoRoom-v1", 2, tmp_path / "again", steps=40, image_size=32, noise=0.3, seed=100_005)
    np.testing.assert_array_equal(EpisodeStore(again).actions(1), store.actions(1))  # seeded: the same episodes


def test_frames_are_square_uint8_at_the_asked_size_and_an_unknown_env_is_named() -> None:
    env = make_swm_env("swm/TwoRoom-v1")
    env.reset(seed=0)
    image = frame(env, 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    with pytest.raises(ValueError, match=r"unknown environment 'swm/TwoRooms-v1'; stable-worldmodel registers .*"
                                         r"'swm/TwoRoom-v1'"):
        make_swm_env("swm/TwoRooms-v1")


class ExpertReplay:
    """An agent that replays the expert actions that led to the goal: the protocol must count it a success."""

    def reset(self, goal_frame, episode) -> None:
        self.actions = list(episode.expert_actions)

    def plan(self, frame, state) -> np.ndarray:
        return np.stack([self.actions.pop(0) for _ in range(min(5, len(self.actions)))]) if self.actions else \
            np.zeros((1, 2), np.float32)


def test_the_goal_protocol_counts_the_expert_path_a_success_and_a_standing_agent_a_failure() -> None:
    from thinkjepa.policy.swm_protocol import GoalProtocol, run_protocol

    protocol = GoalProtocol(episodes=3, goal_offset=25, eval_budget=30)
    replayed = run_protocol("swm/TwoRoom-v1", ExpertReplay(), protocol, image_size=32)
    assert [r["success"] for r in replayed] == [True] * 3 and all(r["steps"] <= 25 for r in replayed)
    assert all(r["closest_distance"] == r["final_distance"] < 16 for r in replayed)  # TwoRoom: within 16 px

    class Stand:
        far: list[float] = []

        def reset(self, goal_frame, episode) -> None:
            self.far.append(float(np.linalg.norm(episode.goal - episode.start)))

        def plan(self, frame, state) -> np.ndarray:
            return np.zeros((5, 2), np.float32)

    stood = run_protocol("swm/TwoRoom-v1", Stand(), protocol, image_size=32)
    assert [r["steps"] for r in stood] == [30] * 3 and not any(r["success"] for r in stood)
    np.testing.assert_allclose([r["final_distance"] for r in stood], Stand.far, rtol=1e-5)
    assert min(Stand.far) > 16


def test_block_mpc_plans_blocks_with_a_world_model_of_the_block_dimension(tmp_path) -> None:
    import torch

    from thinkjepa.policy.swm_eval import evaluate_swm
    from thinkjepa.policy.swm_protocol import BlockMPC, GoalProtocol
    from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, save_world_model

    torch.manual_seed(0)
    wm = JEPA(EncoderConfig(image_size=32, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2),
              PredictorConfig(action_space="continuous", num_actions=10, action_embed_dim=8, hidden_dim=32, depth=1))
    protocol = GoalProtocol(episodes=2, goal_offset=10, eval_budget=10, horizon=2, receding_horizon=1,
                            num_samples=16, iterations=2, num_elites=4)
    agent = BlockMPC(wm, np.full(2, -1.0, np.float32), np.ones(2, np.float32), protocol)
    agent.reset(np.zeros((32, 32, 3), np.uint8))
    actions = agent.plan(np.zeros((32, 32, 3), np.uint8))
    assert actions.shape == (5, 2) and np.all(np.abs(actions) <= 1)  # one block of 5 two-dimensional actions
    assert agent.mpc.cost.steps == "final" and agent.mpc.metric == "l2"  # every planned block runs: score the end
    from thinkjepa.policy.mpc import ActionsToGo
    from thinkjepa.worldmodel.goal_distance import DistanceConfig, GoalDistance

    wm.distance = GoalDistance(DistanceConfig(hidden_dim=8, depth=1, max_distance=4), wm.latent_dim)
    with_head = BlockMPC(wm, np.full(2, -1.0, np.float32), np.ones(2, np.float32), protocol)
    assert isinstance(with_head.mpc.metric, ActionsToGo) and with_head.mpc.metric.head is wm.distance
    wm.distance = None
    save_world_model(wm, tmp_path / "wm")
    summary = evaluate_swm(str(tmp_path / "wm"), protocol=protocol, out=str(tmp_path / "out"))
    assert summary["episodes"] == 2 and summary["errored"] == 0 and summary["planning_seconds_per_episode"] > 0
    assert (tmp_path / "out" / "summary.json").is_file()
    world = evaluate_swm(str(tmp_path / "wm"), protocol=protocol, in_world=True, num_envs=2)
    assert world["runner"] == "stable_worldmodel.World" and world["episodes"] == 2
    assert world["planning_seconds_per_episode"] > 0  # each of the world's two envs planned with its own agent


def test_long_horizon_episodes_cross_rooms_and_the_oracle_switches_from_the_doorway_to_the_goal() -> None:
    import torch

    from thinkjepa.policy.swm_protocol import DoorwayOracle, GoalProtocol, doorway, goal_episodes, room
    from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig

    env = make_swm_env("swm/TwoRoom-v1")
    protocol = GoalProtocol(episodes=3, goal_offset=100, eval_budget=200, other_room=True, horizon=2,
                            receding_horizon=1, num_samples=8, iterations=1, num_elites=2)
    episodes = goal_episodes("swm/TwoRoom-v1", env, protocol, 32)
    assert len(episodes) == 3 and all(room(env, e.start) != room(env, e.goal) for e in episodes)
    door = doorway(env, episodes[0].start)
    assert float(env.unwrapped.wall_pos) in [float(v) for v in door]  # a point of the wall

    torch.manual_seed(0)
    wm = JEPA(EncoderConfig(image_size=32, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2),
              PredictorConfig(action_space="continuous", num_actions=10, action_embed_dim=8, hidden_dim=32, depth=1))
    oracle = DoorwayOracle(wm, np.full(2, -1.0, np.float32), np.ones(2, np.float32), protocol, "swm/TwoRoom-v1", 32)
    oracle.reset(episodes[0].goal_frame, episodes[0])
    assert oracle.door is not None and not torch.equal(oracle.goal, oracle.final)  # first the doorway
    oracle.plan(np.zeros((32, 32, 3), np.uint8), episodes[0].start)
    assert oracle.door is not None  # far from the door: still heading there
    oracle.plan(np.zeros((32, 32, 3), np.uint8), oracle.door + 1.0)
    assert oracle.door is None and torch.equal(oracle.goal, oracle.final)  # at the door: on to the goal


def test_pusht_expert_pushes_the_block_and_episodes_place_agent_block_and_goal() -> None:
    from thinkjepa.envs.swm import expert_rollout, place
    from thinkjepa.policy.swm_protocol import GoalProtocol, goal_episodes

    env = make_swm_env("swm/PushT-v1")
    run = expert_rollout("swm/PushT-v1", env, 60, seed=3, image_size=32)
    assert run.states.shape == (61, 7) and run.actions.shape == (60, 2) and run.frames.shape == (61, 32, 32, 3)
    block = run.states[:, 2:5]  # block x, y, angle: the collection policy pushes it
    assert np.abs(block[-1] - block[0]).max() > 1.0
    again = place("swm/PushT-v1", env, 3, run.states[30], run.states[60])
    np.testing.assert_allclose(again[2:5], run.states[30][2:5], atol=1e-3)  # the block where it was put, the
    assert np.linalg.norm(again[:2] - run.states[30][:2]) < 5.0  # agent within a few px (PushT settles contacts)
    with pytest.raises(ValueError, match="takes no action noise"):
        expert_rollout("swm/PushT-v1", env, 5, seed=3, noise=0.3)
    protocol = GoalProtocol(episodes=2, goal_offset=10, eval_budget=10)
    episodes = goal_episodes("swm/PushT-v1", env, protocol, 32)
    assert len(episodes) == 2 and episodes[0].goal.shape == (7,) and episodes[0].goal_frame.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="no rooms"):
        goal_episodes("swm/PushT-v1", env, GoalProtocol(episodes=1, other_room=True), 32)


def test_collect_swm_refuses_the_protocols_seeds(tmp_path):
    with pytest.raises(ValueError, match=r"collect_swm\(swm/TwoRoom-v1\) would use reset seeds 0\.\.399, which overlap"):
        collect_swm("swm/TwoRoom-v1", 400, tmp_path / "tworoom", seed=0)
    assert not (tmp_path / "tworoom").exists()


def test_tworoom_path_length_is_straight_within_a_room_and_through_the_door_between_rooms() -> None:
    env = make_swm_env("swm/TwoRoom-v1")
    env.reset(seed=100_000)
    door = tworoom_doors(env)[0]  # the layout's one door: the wall at x = 112
    a = np.array([[50.0, 150.0], [50.0, 150.0], [150.0, 200.0]], np.float32)
    b = np.array([[60.0, 180.0], [170.0, 150.0], [150.0, 20.0]], np.float32)
    expected = [np.hypot(10, 30), np.linalg.norm(a[1] - door) + np.linalg.norm(b[1] - door), 180.0]
    np.testing.assert_allclose(tworoom_path_length(env, a, b), expected, rtol=1e-5)
    np.testing.assert_allclose(tworoom_path_length(env, b, a), expected, rtol=1e-5)  # symmetric
    env.close()


def test_tworoom_states_render_where_they_are_placed_and_walk_as_the_simulator_moves() -> None:
    placed = tworoom_states(12, blocks=3, frameskip=5, image_size=32, seed=100_000)
    assert placed.frames.shape == (12, 32, 32, 3) and placed.positions.shape == (12, 4, 2)
    assert placed.actions.shape == (12, 3, 10) and np.abs(placed.actions).max() <= 1.0
    env = make_swm_env("swm/TwoRoom-v1")
    for i in (0, 7):  # the frame is the render at the start
        place("swm/TwoRoom-v1", env, 100_000, placed.positions[i, 0], np.full(2, -1000.0, np.float32))
        np.testing.assert_array_equal(frame(env, 32), placed.frames[i])
        obs, info = None, None
        for action in placed.actions[i, 0].reshape(5, 2):  # the first block leads where it is recorded
            obs, _, _, _, info = env.step(action)
        np.testing.assert_allclose(np.asarray(info["state"])[:2], placed.positions[i, 1], atol=1e-4)
    moved = np.linalg.norm(np.diff(placed.positions, axis=1), axis=2)
    assert moved.max() <= 5 * 5 * np.sqrt(2) + 1e-3 and moved.mean() > 0  # at most speed x steps per block
    env.close()
    with pytest.raises(ValueError, match="kept for evaluation"):
        tworoom_states(2, 1, 5, 32, seed=42)

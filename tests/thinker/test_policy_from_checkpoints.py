"""`HierarchicalPolicy.from_checkpoints`: the README's three lines, on saved checkpoints and a real level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from thinker_helpers import tiny_thinker, tiny_world_model

from thinkjepa.envs.babyai import NAV_ACTIONS, make_env
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.policy import HierarchicalPolicy
from thinkjepa.policy.demos import CALIBRATION_SEED, calibrate_reach_threshold, demonstrate
from thinkjepa.policy.settings import AgentSettings
from thinkjepa.policy.subgoals import ReachableSubgoals
from thinkjepa.thinker.checkpoint import save_thinker, world_model_fingerprint
from thinkjepa.worldmodel import save_world_model

LEVEL = "BabyAI-GoToLocal-v0"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, world_model):
    root = tmp_path_factory.mktemp("policy")
    wm_dir = save_world_model(world_model, root / "world_model")
    thinker = save_thinker(tiny_thinker("idefics3", world_model), root / "thinker",
                           world_model_fingerprint=world_model_fingerprint(world_model))
    return str(wm_dir), str(thinker)


SMALL_PLANNER = {"class_path": "thinkjepa.planning.cem.CEMPlanner",
                 "init_args": {"horizon": 2, "num_samples": 8, "iterations": 1, "num_elites": 2}}


def small(**settings) -> AgentSettings:
    return AgentSettings(planner=SMALL_PLANNER, **settings)


def test_three_lines_load_a_policy_that_acts_in_the_level(checkpoints, world_model) -> None:
    wm_dir, thinker = checkpoints
    policy = HierarchicalPolicy.from_checkpoints(world_model=wm_dir, thinker=thinker, settings=small(level=LEVEL),
                                                 calibration_episodes=4)
    assert isinstance(policy.mpc.planner, CEMPlanner) and policy.mpc.planner.horizon == 2
    env = make_env(LEVEL, image_size=world_model.image_size)
    obs, info = env.reset(seed=0)
    policy.reset(info["mission"])
    for _ in range(3):
        action = policy.act(obs)
        assert isinstance(action, int) and action in {int(a) for a in NAV_ACTIONS}
        obs, *_ = env.step(action)
    env.close()
    trace = policy.traces[0]
    assert trace.steps == 3 and trace.queries[0] == (0, "start") and len(trace.distance) == 3

    # the threshold is calibrated as the evaluation calibrates it, on bot episodes of the level
    demos = [demonstrate(LEVEL, CALIBRATION_SEED + i, world_model.image_size) for i in range(4)]
    assert policy.reach_threshold == pytest.approx(calibrate_reach_threshold(world_model, demos))
    assert policy.reach_threshold > 0
    given = HierarchicalPolicy.from_checkpoints(world_model=wm_dir, thinker=thinker,
                                                settings=small(reach_threshold=0.25))
    assert given.reach_threshold == 0.25

    # snapped: the thinker's z* is moved onto a state the world model predicts within two actions; this
    # untrained predictor is the identity (every action predicts no change), so that is the current state
    snapped = HierarchicalPolicy.from_checkpoints(world_model=wm_dir, thinker=thinker,
                                                  settings=small(reach_threshold=0.25, snap_depth=2, snap_tabu=True))
    assert isinstance(snapped.subgoals, ReachableSubgoals)
    assert (snapped.subgoals.depth, snapped.subgoals.merge, snapped.subgoals.tabu) == (2, 0.25, True)
    obs, info = make_env(LEVEL, image_size=world_model.image_size).reset(seed=0)
    snapped.reset(info["mission"])
    snapped.act(obs)
    with torch.no_grad():
        here = snapped.world_model.target_encode(torch.as_tensor(obs)[None])[0]
    torch.testing.assert_close(snapped.traces[0].subgoals[0], here)
    assert len(snapped.subgoals.gaps) == 1  # the snap ran once
    found = snapped.subgoals.propose_with_paths([0], torch.as_tensor(obs)[None], blocked=[set()])
    assert found.paths == [[]]  # ... and found no move: every action predicts no change
    torch.testing.assert_close(found.latents[0], here)


def test_a_thinker_of_another_world_model_is_refused_naming_both(checkpoints, world_model, tmp_path) -> None:
    _, thinker = checkpoints
    other = tiny_world_model(seed=1)
    with pytest.raises(ValueError, match=f"{world_model_fingerprint(other)}.*{world_model_fingerprint(world_model)}"):
        HierarchicalPolicy.from_checkpoints(world_model=str(save_world_model(other, tmp_path / "other")),
                                            thinker=thinker, settings=small(reach_threshold=1.0))


def test_calibration_depends_on_the_level(checkpoints, world_model) -> None:
    wm_dir, thinker = checkpoints
    local = HierarchicalPolicy.from_checkpoints(world_model=wm_dir, thinker=thinker, calibration_episodes=3)
    goto = HierarchicalPolicy.from_checkpoints(world_model=wm_dir, thinker=thinker, calibration_episodes=3,
                                               settings=AgentSettings(level="BabyAI-GoToRedBallGrey-v0"))
    assert np.isfinite([local.reach_threshold, goto.reach_threshold]).all()
    assert local.reach_threshold != goto.reach_threshold
    assert torch.is_grad_enabled()  # calibrating does not switch autograd off for the caller

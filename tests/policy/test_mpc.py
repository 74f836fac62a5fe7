"""Latent MPC: an action seen to change nothing is not chosen again from the same state."""

from __future__ import annotations

import torch
from torch import nn

from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.spaces import DiscreteSpace
from thinkjepa.policy.mpc import LatentMPC, ObservedNoOps, PlanningCost


class WallBlind(nn.Module):
    """1-D world model: action 1 ("forward") is predicted to move +1, action 0 ("turn") +0.4;
    it does not know that forward is blocked at the start."""

    latent_dim = 1
    num_actions = 2

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # so LatentMPC can find the device

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        step = torch.where(actions == 1, 1.0, 0.4).unsqueeze(-1)  # (M, H, 1)
        return z0.unsqueeze(1) + step.cumsum(dim=1)


def test_a_blocked_action_is_not_repeated_from_the_same_state():
    mpc = LatentMPC(WallBlind(), CEMPlanner(horizon=3, num_samples=64, iterations=4, num_elites=8),
                    DiscreteSpace(2), PlanningCost("latent", steps="final"))
    mpc.reset(2)
    rows = torch.arange(2)
    z = torch.zeros(2, 1)
    goal = torch.full((2, 1), 3.0)
    first, _ = mpc.act(z, goal, rows)
    assert first.tolist() == [1, 1]  # the model believes forward gets there fastest
    # episode 0 is blocked: its latent did not change; episode 1 moved
    second, _ = mpc.act(torch.tensor([[0.0], [1.0]]), goal, rows)
    assert second[0].item() == 0  # forward known to do nothing here: turn instead
    assert second[1].item() == 1  # the other episode still trusts the model
    # once the state changes, forward is trusted again
    third, _ = mpc.act(torch.tensor([[0.4], [2.0]]), torch.tensor([[3.4], [3.0]]), rows)
    assert third[0].item() == 1


def test_observed_no_op_rollout_rules_out_candidates_that_start_with_it():
    model = WallBlind()
    noop = torch.tensor([[False, True], [False, False]])
    z0 = torch.tensor([[0.0], [0.0], [5.0], [5.0]])  # 2 episodes x 2 candidates
    actions = torch.tensor([[1, 1], [0, 1], [1, 1], [0, 0]])
    out = ObservedNoOps.rollout(model.rollout, noop)(z0, actions)
    nan = float("nan")
    expected = torch.tensor([[[nan], [nan]], [[0.4], [1.4]], [[6.0], [7.0]], [[5.4], [5.8]]])
    torch.testing.assert_close(out, expected, equal_nan=True)


def test_bf16_rollouts_run_the_world_model_in_bf16_and_return_float32():
    import pytest

    from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig

    torch.manual_seed(0)
    enc = EncoderConfig(image_size=64, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    wm = JEPA(enc, PredictorConfig(hidden_dim=64, depth=2)).eval()
    torch.nn.init.normal_(wm.predictor.out[1].weight, std=0.1)  # not the identity it starts as
    seen = []
    wm.predictor.inp.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    z0, actions = torch.randn(8, 16), torch.randint(0, 7, (8, 3))
    with torch.no_grad():
        full = PlanningCost().rollout(wm.rollout)(z0, actions)
        half = PlanningCost(rollout_precision="bf16").rollout(wm.rollout)(z0, actions)
    assert set(seen[:3]) == {torch.float32} and set(seen[3:]) == {torch.bfloat16}  # 3 steps each
    assert full.dtype == half.dtype == torch.float32 and half.shape == full.shape == (8, 3, 16)
    assert not torch.equal(half, full)  # rounded, and close: bf16 keeps ~3 significant digits
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="rollout_precision must be '32' or 'bf16', got 'fp8'"):
        PlanningCost(rollout_precision="fp8")


def test_committed_plans_execute_their_first_actions_and_replan_on_a_new_goal_or_a_blocked_step():
    planner = CEMPlanner(horizon=3, num_samples=64, iterations=4, num_elites=8)
    calls = []
    plan = planner.plan
    planner.plan = lambda z0, *a, **k: calls.append(len(z0)) or plan(z0, *a, **k)
    mpc = LatentMPC(WallBlind(), planner, DiscreteSpace(2), PlanningCost("latent", steps="final"), commit=3)
    mpc.reset(2)
    rows, goal = torch.arange(2), torch.full((2, 1), 3.0)
    first, cost = mpc.act(torch.zeros(2, 1), goal, rows)
    assert first.tolist() == [1, 1] and calls == [2]
    # the next two steps follow the plan without planning; episode 1 gets a new goal and plans alone
    mpc.drop([1])
    second, cost2 = mpc.act(torch.tensor([[1.0], [1.0]]), torch.tensor([[3.0], [1.4]]), rows)
    assert second.tolist() == [1, 0] and calls == [2, 1]  # episode 0 committed; episode 1: turn is +0.4
    assert cost2[0] == cost[0]  # a committed step reports the cost of the plan it follows
    # episode 0's committed "forward" did nothing (blocked): it plans again at once, and not forward
    third, _ = mpc.act(torch.tensor([[1.0], [1.4]]), goal, rows)
    assert calls == [2, 1, 1] and third[0].item() == 0
    assert mpc.planner_seconds > 0


def test_commit_must_fit_the_plan():
    import pytest

    from thinkjepa.policy.settings import AgentSettings

    with pytest.raises(ValueError, match="commit must be between 1 and the planner's horizon \\(3\\), got 4"):
        LatentMPC(WallBlind(), CEMPlanner(horizon=3, num_samples=8, iterations=1, num_elites=2), DiscreteSpace(2),
                  commit=4)
    with pytest.raises(ValueError, match="commit must be >= 1, got 0"):
        AgentSettings(commit=0)

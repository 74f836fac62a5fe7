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

"""Warm starts: the previous plan is shifted by one step and seeds the next search."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.planning import (
    BoxSpace,
    CEMPlanner,
    DiscreteSpace,
    GoalCost,
    GradientPlanner,
    MPPIPlanner,
    PlanResult,
)

NAVIGATION = DiscreteSpace(7, allowed=(0, 1, 2))
BOX = BoxSpace(-1.0, 1.0, dim=2)


def test_shifted_drops_first_step_and_repeats_last() -> None:
    probs = torch.softmax(torch.randn(2, 4, 7), dim=-1)
    plan = PlanResult(
        actions=torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]]), cost=torch.tensor([0.5, 1.5]), probs=probs
    )
    shifted = plan.shifted()

    assert torch.equal(shifted.actions, torch.tensor([[1, 2, 1, 1], [2, 0, 1, 1]]))
    assert torch.equal(shifted.probs[:, :3], probs[:, 1:]) and torch.equal(shifted.probs[:, 3], probs[:, 3])
    assert torch.equal(shifted.cost, plan.cost)
    assert torch.equal(plan.shifted(2).actions, torch.tensor([[2, 1, 1, 1], [0, 1, 1, 1]]))
    assert plan.shifted(0) is plan
    with pytest.raises(ValueError, match="shift a horizon-4 plan"):
        plan.shifted(4)


def test_shifted_moves_gaussian_state() -> None:
    mean = torch.arange(12.0).view(1, 3, 4)[..., :2]  # (1, 3, 2)
    plan = PlanResult(actions=mean.clone(), cost=torch.zeros(1), mean=mean, std=mean + 1)
    shifted = plan.shifted()
    assert torch.equal(shifted.mean, torch.cat([mean[:, 1:], mean[:, 2:]], dim=1))
    assert torch.equal(shifted.std, torch.cat([mean[:, 1:], mean[:, 2:]], dim=1) + 1)


def test_cem_starts_from_the_shifted_categorical(grid, counting) -> None:
    # A one-hot previous distribution and no uniform mixing: every first-iteration sample is the shift.
    previous = torch.tensor([[2, 0, 2, 1, 2]])
    init = PlanResult(
        actions=previous, cost=torch.zeros(1), probs=torch.nn.functional.one_hot(previous, 7).float()
    )
    rollout = counting(grid.rollout)
    planner = CEMPlanner(5, num_samples=16, iterations=2, num_elites=4, warm_mix=0.0, min_prob=0.0)
    z0 = grid.latent(0, 0, (1, 0))[None]
    planner.plan(z0, GoalCost(z0), rollout, NAVIGATION, init=init)

    expected = torch.tensor([0, 2, 1, 2, 2])
    assert (rollout.batches[0] == expected).all()


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_sampling_planners_evaluate_the_shifted_plan_first(point_mass, counting, kind: str) -> None:
    init_actions = torch.tensor([[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]])  # (1, H, A)
    init = PlanResult(actions=init_actions, cost=torch.zeros(1), mean=init_actions.clone())
    planner = (CEMPlanner if kind == "cem" else MPPIPlanner)(3, num_samples=8, iterations=1)
    rollout = counting(point_mass.rollout)
    z0 = torch.zeros(1, 2)
    planner.plan(z0, GoalCost(torch.ones(1, 2)), rollout, BOX, init=init)

    shifted = torch.tensor([[0.3, 0.4], [0.5, 0.6], [0.5, 0.6]])
    assert torch.allclose(rollout.batches[0][0], shifted)  # candidate 0: the shifted mean
    assert torch.allclose(rollout.batches[0][1], shifted)  # candidate 1: the shifted best plan


def test_gradient_restart_zero_starts_at_the_shifted_plan(point_mass, counting) -> None:
    init_actions = torch.tensor([[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]])
    init = PlanResult(actions=init_actions, cost=torch.zeros(1))
    rollout = counting(point_mass.rollout)
    GradientPlanner(3, iterations=1, num_restarts=4).plan(
        torch.zeros(1, 2), GoalCost(torch.ones(1, 2)), rollout, BOX, init=init
    )
    assert torch.allclose(rollout.batches[0][0], torch.tensor([[0.3, 0.4], [0.5, 0.6], [0.5, 0.6]]))


@pytest.mark.parametrize("kind", ["cem", "mppi", "gradient"])
def test_mpc_step_never_worse_than_the_shifted_plan(grid, kind: str) -> None:
    # One MPC step on the grid: execute the first action, re-plan warm with a single iteration.
    z0, goal = grid.latent(0, 0, (1, 0))[None], grid.latent(3, 2, (0, 1))[None]
    cost = GoalCost(goal, weights="all")
    horizon = 6
    make = {
        "cem": lambda it: CEMPlanner(horizon, num_samples=300, iterations=it),
        "mppi": lambda it: MPPIPlanner(horizon, num_samples=300, iterations=it),
        "gradient": lambda it: GradientPlanner(horizon, iterations=it, num_restarts=8),
    }[kind]
    first = make(15).plan(z0, cost, grid.rollout, NAVIGATION, generator=torch.Generator().manual_seed(0))
    z1 = grid.rollout(z0, first.actions[:, :1])[:, 0]
    shifted_cost = cost(grid.rollout(z1, first.shifted().actions).unsqueeze(1))  # (1, 1)
    second = make(1).plan(
        z1, cost, grid.rollout, NAVIGATION, init=first, generator=torch.Generator().manual_seed(1)
    )
    assert second.cost.item() <= shifted_cost.item() + 1e-6

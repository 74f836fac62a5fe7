"""Bad inputs fail early, with messages that name the offending shape or value."""

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
PLANNERS = [CEMPlanner, MPPIPlanner, GradientPlanner]


@pytest.mark.parametrize("planner_cls", PLANNERS)
@pytest.mark.parametrize("horizon", [0, -1])
def test_horizon_below_one(planner_cls, horizon: int) -> None:
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        planner_cls(horizon)


@pytest.mark.parametrize("planner_cls", PLANNERS)
def test_goal_batch_mismatch(point_mass, planner_cls) -> None:
    planner = planner_cls(3, iterations=1)
    with pytest.raises(ValueError, match=r"to match goal \(2, 2\)"):
        planner.plan(torch.zeros(3, 2), GoalCost(torch.zeros(2, 2)), point_mass.rollout, BOX)


def test_z0_must_be_batched(point_mass) -> None:
    with pytest.raises(ValueError, match=r"z0 must be \(B, D\)"):
        CEMPlanner(3).plan(torch.zeros(2), GoalCost(torch.zeros(1, 2)), point_mass.rollout, BOX)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (torch.zeros(1, 4, dtype=torch.long), r"init.actions for a DiscreteSpace must be long \(1, 3\)"),
        (torch.zeros(1, 3), r"init.actions for a DiscreteSpace must be long"),
        (torch.tensor([[0, 1, 4]]), r"ids \[4\] not in the allowed set"),
    ],
)
def test_bad_discrete_init(grid, actions: torch.Tensor, match: str) -> None:
    z0 = grid.latent(0, 0, (1, 0))[None]
    with pytest.raises(ValueError, match=match):
        CEMPlanner(3).plan(
            z0, GoalCost(z0), grid.rollout, NAVIGATION, init=PlanResult(actions, torch.zeros(1))
        )


def test_bad_continuous_init(point_mass) -> None:
    init = PlanResult(actions=torch.zeros(1, 3, 3), cost=torch.zeros(1))
    with pytest.raises(
        ValueError, match=r"init.actions for a BoxSpace must be float \(1, 3, 2\), got .* \(1, 3, 3\)"
    ):
        MPPIPlanner(3).plan(
            torch.zeros(1, 2), GoalCost(torch.zeros(1, 2)), point_mass.rollout, BOX, init=init
        )


def test_init_probs_for_wrong_space(grid) -> None:
    init = PlanResult(
        actions=torch.zeros(1, 3, dtype=torch.long), cost=torch.zeros(1), probs=torch.ones(1, 3, 5) / 5
    )
    z0 = grid.latent(0, 0, (1, 0))[None]
    with pytest.raises(ValueError, match=r"init.probs must be \(1, 3, K\) for a DiscreteSpace with K=7"):
        CEMPlanner(3).plan(z0, GoalCost(z0), grid.rollout, NAVIGATION, init=init)


def test_rollout_with_wrong_output_shape() -> None:
    def rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return z0.unsqueeze(1)  # forgot the horizon

    with pytest.raises(ValueError, match=r"rollout returned \(8, 1, 2\).*expected \(M, H, D\) = \(8, 3, 2\)"):
        CEMPlanner(3, num_samples=8, iterations=1).plan(
            torch.zeros(1, 2), GoalCost(torch.zeros(1, 2)), rollout, BOX
        )


def test_cost_with_wrong_output_shape(point_mass) -> None:
    with pytest.raises(ValueError, match=r"cost returned \(8,\).*expected \(B, N\) = \(1, 8\)"):
        CEMPlanner(3, num_samples=8, iterations=1).plan(
            torch.zeros(1, 2), lambda z: z.sum(dim=(0, 2, 3)), point_mass.rollout, BOX
        )


def test_gradient_planner_needs_a_differentiable_rollout(point_mass) -> None:
    def frozen(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return point_mass.rollout(z0, actions)

    with pytest.raises(RuntimeError, match="does not depend differentiably on the actions"):
        GradientPlanner(3, iterations=2).plan(torch.zeros(1, 2), GoalCost(torch.ones(1, 2)), frozen, BOX)


def test_unknown_space(point_mass) -> None:
    with pytest.raises(TypeError, match="space must be a DiscreteSpace or BoxSpace"):
        CEMPlanner(3).plan(torch.zeros(1, 2), GoalCost(torch.zeros(1, 2)), point_mass.rollout, "box")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples and iterations must be >= 1"),
        ({"momentum": 1.0}, "0 <= momentum < 1"),
        ({"min_prob": 1.0}, "0 <= min_prob < 1"),
        ({"num_elites": 0}, "num_elites must be >= 1"),
    ],
)
def test_bad_cem_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CEMPlanner(3, **kwargs)

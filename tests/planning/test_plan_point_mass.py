"""Continuous planning on a linear point mass, where the optimum is known in closed form."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.planning import BoxSpace, CEMPlanner, GoalCost, GradientPlanner, MPPIPlanner, Planner

H = 3
SPACE = BoxSpace(-1.0, 1.0, dim=2)


def planners() -> list[tuple[Planner, float]]:
    """Each planner with the final-distance tolerance it must reach."""
    return [
        (CEMPlanner(H, num_samples=100, iterations=20, num_elites=10), 0.01),
        (MPPIPlanner(H, num_samples=100, iterations=30, noise_std=0.3), 0.05),
        (GradientPlanner(H, iterations=60, lr=0.1, num_restarts=4), 0.01),
    ]


@pytest.mark.parametrize(("planner", "tol"), planners(), ids=["cem", "mppi", "gradient"])
def test_reaches_interior_goal(point_mass, planner: Planner, tol: float) -> None:
    z0 = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]])  # (B, D)
    action_sum = torch.tensor([[1.0, -0.5], [-2.0, 1.0], [0.3, 0.7]])  # reachable: |sum| <= H per dim
    goal = z0 + action_sum @ point_mass.matrix.T
    result = planner.plan(
        z0, GoalCost(goal), point_mass.rollout, SPACE, generator=torch.Generator().manual_seed(0)
    )

    final = point_mass.land(z0, result.actions)
    assert (final - goal).norm(dim=-1).max() < tol
    assert torch.allclose(result.cost, (final - goal).norm(dim=-1), atol=1e-5)  # cost is of the returned plan
    # the plan is not unique, but B is invertible so the sum of actions is
    assert torch.allclose(result.actions.sum(dim=1), action_sum, atol=2 * tol)
    assert result.actions.abs().max() <= 1.0


@pytest.mark.parametrize(("planner", "tol"), planners(), ids=["cem", "mppi", "gradient"])
def test_corner_goal_has_unique_saturated_plan(point_mass, planner: Planner, tol: float) -> None:
    z0 = torch.tensor([[0.2, -0.3]])
    corner = torch.tensor([1.0, -1.0])  # only a_t = corner for every t reaches z0 + H·B·corner
    goal = z0 + H * corner @ point_mass.matrix.T
    result = planner.plan(
        z0, GoalCost(goal), point_mass.rollout, SPACE, generator=torch.Generator().manual_seed(1)
    )

    assert result.cost.item() < tol
    assert torch.allclose(result.actions, corner.expand(1, H, 2), atol=tol)


def test_step_weights_prefer_getting_there_early(point_mass) -> None:
    # 1-D: goal 2.5 away with |a| <= 1, H = 3; minimising the mean distance over steps means full speed
    # until the goal: a = (1, 1, 0.5) is the unique optimum (intermediate distances 1.5, 0.5, 0).
    z0 = torch.zeros(1, 2)
    goal = torch.tensor([[2.5, 0.0]])
    space = BoxSpace(low=(-1.0, 0.0), high=(1.0, 1e-6), dim=2)  # second action dim pinned to ~0
    planner = CEMPlanner(H, num_samples=200, iterations=30, num_elites=20)

    def rollout(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z.unsqueeze(1) + a.cumsum(dim=1)  # identity B

    result = planner.plan(
        z0, GoalCost(goal, weights="all"), rollout, space, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(result.actions[0, :, 0], torch.tensor([1.0, 1.0, 0.5]), atol=0.02)


def test_a_shrinking_population_and_stopping_once_the_elites_agree_save_rollouts_not_accuracy(point_mass) -> None:
    """iCEM's population decay (0.9) and an early stop at std 0.03 half-widths: the same goals, reached as closely as
    full CEM reaches them, with fewer candidate rollouts; each iteration's population is the decayed size, never
    below twice the elites."""
    z0 = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]])
    goal = z0 + torch.tensor([[1.0, -0.5], [-2.0, 1.0], [0.3, 0.7]]) @ point_mass.matrix.T
    sizes: list[int] = []

    def rollout(z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        sizes.append(actions.shape[0])
        return point_mass.rollout(z, actions)

    full = CEMPlanner(H, num_samples=100, iterations=20, num_elites=10)
    lean = CEMPlanner(H, num_samples=100, iterations=20, num_elites=10, population_decay=0.9, converge_std=0.03)
    reached = {}
    for name, planner in (("full", full), ("lean", lean)):
        sizes.clear()
        result = planner.plan(z0, GoalCost(goal), rollout, SPACE, generator=torch.Generator().manual_seed(0))
        final = point_mass.rollout(z0, result.actions)[:, -1]
        reached[name] = (final - goal).norm(dim=-1).max().item(), sum(sizes), planner.last_iterations
        if name == "lean":
            expected = [3 * max(20, round(100 * 0.9**i)) for i in range(len(sizes))]
            assert sizes == expected
    assert reached["full"][2] == 20 and reached["lean"][2] < 20  # stopped early
    assert reached["lean"][1] < reached["full"][1] / 2  # less than half the rollouts
    assert reached["lean"][0] < 0.01 and reached["full"][0] < 0.01  # both reach every goal
    assert lean.last_evaluations == reached["lean"][1]

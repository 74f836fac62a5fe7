"""Batched planning: B episodes in one call, one rollout call per iteration, reproducible with a seed."""

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
    Planner,
)

NAVIGATION = DiscreteSpace(7, allowed=(0, 1, 2))
BOX = BoxSpace(-1.0, 1.0, dim=2)


def make_planner(kind: str, horizon: int) -> Planner:
    if kind == "cem":
        return CEMPlanner(horizon, num_samples=300, iterations=15, num_elites=30)
    if kind == "mppi":
        return MPPIPlanner(horizon, num_samples=300, iterations=15, noise_std=0.3)
    return GradientPlanner(horizon, iterations=40, lr=0.3, num_restarts=32)


def rows_per_call(planner: Planner, batch: int, space: DiscreteSpace | BoxSpace) -> int:
    if isinstance(planner, GradientPlanner):  # discrete: relaxed and hard rows side by side
        return batch * planner.num_restarts * (2 if isinstance(space, DiscreteSpace) else 1)
    return batch * planner.num_samples


def grid_problems(grid) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Three start/goal pairs whose shortest paths all take 6 steps."""
    starts = torch.stack([grid.latent(0, 0, (1, 0)), grid.latent(4, 0, (-1, 0)), grid.latent(0, 4, (0, -1))])
    goals = torch.stack([grid.latent(3, 2, (0, 1)), grid.latent(1, 2, (0, 1)), grid.latent(2, 1, (1, 0))])
    lengths = {grid.shortest(s, g) for s, g in zip(starts, goals)}
    assert lengths == {6}
    return starts, goals, 6


@pytest.mark.parametrize("kind", ["cem", "mppi", "gradient"])
def test_batched_grid_matches_alone_in_one_call_per_iteration(grid, counting, kind: str) -> None:
    z0, goals, horizon = grid_problems(grid)
    planner = make_planner(kind, horizon)
    rollout = counting(grid.rollout)
    batched = planner.plan(
        z0, GoalCost(goals), rollout, NAVIGATION, generator=torch.Generator().manual_seed(0)
    )

    assert rollout.calls == planner.iterations
    assert all(b.shape[0] == rows_per_call(planner, 3, NAVIGATION) for b in rollout.batches)
    for b in range(3):
        alone = planner.plan(
            z0[b : b + 1],
            GoalCost(goals[b : b + 1]),
            grid.rollout,
            NAVIGATION,
            generator=torch.Generator().manual_seed(0),
        )
        assert batched.cost[b].item() == pytest.approx(alone.cost.item(), abs=1e-6) == 0.0
        assert torch.equal(grid.rollout(z0[b : b + 1], batched.actions[b : b + 1])[0, -1], goals[b])


@pytest.mark.parametrize("kind", ["cem", "mppi", "gradient"])
def test_batched_point_mass_reaches_every_goal_as_planning_alone_does(point_mass, counting, kind: str) -> None:
    z0 = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]])
    goal = z0 + torch.tensor([[1.0, -0.5], [-2.0, 1.0], [0.3, 0.7]]) @ point_mass.matrix.T
    planner = make_planner(kind, horizon=3)
    rollout = counting(point_mass.rollout)
    batched = planner.plan(z0, GoalCost(goal), rollout, BOX, generator=torch.Generator().manual_seed(0))

    assert rollout.calls == planner.iterations
    assert all(b.shape[0] == rows_per_call(planner, 3, BOX) for b in rollout.batches)
    for b in range(3):
        alone = planner.plan(
            z0[b : b + 1],
            GoalCost(goal[b : b + 1]),
            point_mass.rollout,
            BOX,
            generator=torch.Generator().manual_seed(0),
        )
        assert batched.cost[b] < 0.05 and alone.cost[0] < 0.05


def test_rows_are_episode_major(point_mass, counting) -> None:
    # row b·N + n of a rollout call must start from z0[b]
    seen: list[torch.Tensor] = []

    def rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        seen.append(z0.clone())
        return point_mass.rollout(z0, actions)

    z0 = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    CEMPlanner(2, num_samples=4, iterations=1, num_elites=2).plan(z0, GoalCost(z0), rollout, BOX)
    assert torch.equal(seen[0], z0.repeat_interleave(4, dim=0))


@pytest.mark.parametrize("kind", ["cem", "mppi", "gradient"])
@pytest.mark.parametrize("space", [NAVIGATION, BOX], ids=["discrete", "box"])
def test_seeded_generator_gives_identical_plans(grid, point_mass, kind: str, space) -> None:
    world = grid if isinstance(space, DiscreteSpace) else point_mass
    z0 = (
        torch.stack([grid.latent(0, 0, (1, 0)), grid.latent(4, 0, (-1, 0))])
        if world is grid
        else torch.zeros(2, 2)
    )
    goal = z0 + 1.5
    planner = make_planner(kind, horizon=4)
    planner.iterations = 3  # reproducibility does not need convergence

    def plan(seed: int):
        return planner.plan(
            z0, GoalCost(goal), world.rollout, space, generator=torch.Generator().manual_seed(seed)
        )

    first, again, other = plan(7), plan(7), plan(8)
    assert torch.equal(first.actions, again.actions) and torch.equal(first.cost, again.cost)
    state = first.probs if first.probs is not None else first.mean
    assert torch.equal(state, again.probs if again.probs is not None else again.mean)
    other_state = other.probs if other.probs is not None else other.mean
    assert not torch.equal(state, other_state)  # the seed is actually used

"""Discrete planning in a deterministic grid world: planners must find a shortest action sequence."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.planning import CEMPlanner, DiscreteSpace, GoalCost, GradientPlanner, MPPIPlanner, Planner

NAVIGATION = DiscreteSpace(7, allowed=(0, 1, 2))  # left, right, forward; no jump (3)


def make_planner(kind: str, horizon: int) -> Planner:
    if kind == "cem":
        return CEMPlanner(horizon, num_samples=300, iterations=15, num_elites=30)
    if kind == "mppi":
        return MPPIPlanner(horizon, num_samples=300, iterations=15)
    return GradientPlanner(horizon, iterations=40, lr=0.3, num_restarts=32)


@pytest.mark.parametrize("kind", ["cem", "mppi", "gradient"])
@pytest.mark.parametrize(
    ("start", "goal"),
    [((0, 0, (1, 0)), (3, 2, (0, 1))), ((2, 2, (-1, 0)), (2, 0, (1, 0))), ((4, 4, (0, -1)), (1, 3, (1, 0)))],
)
def test_finds_shortest_path(grid, kind: str, start: tuple, goal: tuple) -> None:
    z0, z_goal = grid.latent(*start)[None], grid.latent(*goal)[None]  # (1, 4)
    shortest = grid.shortest(z0[0], z_goal[0])  # BFS over left/right/forward
    planner = make_planner(kind, horizon=shortest)  # reaching the goal in `shortest` steps = a shortest path
    result = planner.plan(
        z0, GoalCost(z_goal), grid.rollout, NAVIGATION, generator=torch.Generator().manual_seed(0)
    )

    assert result.actions.dtype == torch.long and result.actions.shape == (1, shortest)
    assert torch.equal(grid.rollout(z0, result.actions)[0, -1], z_goal[0])
    assert result.cost.item() < 1e-6


@pytest.mark.parametrize("kind", ["cem", "mppi", "gradient"])
def test_allowed_subset_is_respected(grid, counting, kind: str) -> None:
    # Jump (3) would shorten every path here, and ids 4 and 6 are harmless no-ops; the planner may use
    # only BabyAI's navigation subset and must still reach the goal by walking.
    space = DiscreteSpace(7, allowed=(0, 1, 2, 5))
    z0, z_goal = grid.latent(0, 0, (1, 0))[None], grid.latent(3, 2, (0, 1))[None]
    rollout = counting(grid.rollout)
    planner = make_planner(kind, horizon=grid.shortest(z0[0], z_goal[0]))
    result = planner.plan(z0, GoalCost(z_goal), rollout, space, generator=torch.Generator().manual_seed(0))

    disallowed = [3, 4, 6]
    for batch in rollout.batches:
        if batch.dtype == torch.long:
            assert not torch.isin(batch, torch.tensor(disallowed)).any()
        else:  # relaxed probabilities: no mass on disallowed ids
            assert batch[..., disallowed].abs().max() == 0
    assert torch.isin(result.actions, space.ids()).all()
    if result.probs is not None:
        assert result.probs[..., disallowed].abs().max() == 0
    assert result.cost.item() < 1e-6

"""The per-episode reference CEM solves the same problems as the batched planner."""

from __future__ import annotations

import torch

from thinkjepa.planning import BoxSpace, CEMPlanner, DiscreteSpace, GoalCost
from thinkjepa.planning.reference import ReferenceCEMPlanner


def test_reference_matches_batched_cem_on_grid(grid, counting) -> None:
    starts = torch.stack([grid.latent(0, 0, (1, 0)), grid.latent(4, 0, (-1, 0))])
    goals = torch.stack([grid.latent(3, 2, (0, 1)), grid.latent(1, 2, (0, 1))])
    space = DiscreteSpace(7, allowed=(0, 1, 2))
    kwargs = {"num_samples": 300, "iterations": 15, "num_elites": 30}
    rollout = counting(grid.rollout)
    reference = ReferenceCEMPlanner(6, **kwargs).plan(
        starts, GoalCost(goals), rollout, space, generator=torch.Generator().manual_seed(0)
    )
    batched = CEMPlanner(6, **kwargs).plan(starts, GoalCost(goals), grid.rollout, space)

    assert rollout.calls == 2 * 15 and all(
        b.shape[0] == 300 for b in rollout.batches
    )  # one episode at a time
    assert torch.equal(reference.cost, torch.zeros(2)) and torch.equal(batched.cost, torch.zeros(2))
    assert torch.equal(grid.rollout(starts, reference.actions)[:, -1], goals)


def test_reference_continuous(point_mass) -> None:
    z0 = torch.zeros(2, 2)
    goal = torch.tensor([[1.0, -0.5], [-2.0, 1.0]]) @ point_mass.matrix.T
    result = ReferenceCEMPlanner(3, num_samples=100, iterations=20, num_elites=10).plan(
        z0,
        GoalCost(goal),
        point_mass.rollout,
        BoxSpace(-1.0, 1.0, 2),
        generator=torch.Generator().manual_seed(0),
    )
    assert result.actions.shape == (2, 3, 2) and (result.cost < 0.01).all()

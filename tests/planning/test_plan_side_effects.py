"""Planning leaves the world model alone and survives diverged candidates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from thinkjepa.planning import BoxSpace, CEMPlanner, DiscreteSpace, GoalCost, GradientPlanner, MPPIPlanner


@pytest.mark.parametrize("space", [DiscreteSpace(3), BoxSpace(-1.0, 1.0, 3)], ids=["discrete", "box"])
def test_gradient_planning_accumulates_no_parameter_grads(space) -> None:
    model = nn.Linear(4 + 3, 4)  # predictor whose parameters require grad, as during training

    def rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if actions.dtype == torch.long:
            actions = nn.functional.one_hot(actions, 3).float()
        z, out = z0, []
        for t in range(actions.shape[1]):
            z = z + model(torch.cat([z, actions[:, t]], dim=-1))
            out.append(z)
        return torch.stack(out, dim=1)

    z0 = torch.randn(2, 4, requires_grad=True)  # e.g. straight from an encoder
    GradientPlanner(3, iterations=3, num_restarts=2).plan(z0, GoalCost(torch.zeros(2, 4)), rollout, space)
    assert all(p.grad is None for p in model.parameters()) and z0.grad is None


@pytest.mark.parametrize("planner_cls", [CEMPlanner, MPPIPlanner])
def test_nan_candidates_never_win(point_mass, planner_cls) -> None:
    def rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z = point_mass.rollout(z0, actions)
        diverged = actions[:, 0, 0] > 0.5  # (M,): this part of action space blows the model up
        return torch.where(diverged[:, None, None], torch.full_like(z, float("nan")), z)

    goal = torch.tensor([[2.0, 1.0]])
    result = planner_cls(2, num_samples=64, iterations=5).plan(
        torch.zeros(1, 2),
        GoalCost(goal),
        rollout,
        BoxSpace(-1.0, 1.0, 2),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(result.cost).all() and result.actions[0, 0, 0] <= 0.5
    assert torch.isfinite(result.mean).all() and torch.isfinite(result.std).all()

"""GoalCost: distances of rollouts to per-episode goals."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.planning import GoalCost, latent_distance


def trajectories() -> tuple[torch.Tensor, torch.Tensor]:
    goal = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # (B, D)
    z = torch.zeros(2, 3, 4, 2)  # (B, N, H, D)
    z[:, 1] = goal[:, None]  # candidate 1 sits on the goal at every step
    z[:, 2, -1] = goal  # candidate 2 reaches it at the last step only
    return z, goal


def test_final_l2() -> None:
    z, goal = trajectories()
    cost = GoalCost(goal)(z)
    assert cost.shape == (2, 3)
    assert torch.allclose(cost, torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))


def test_all_steps_and_custom_weights() -> None:
    z, goal = trajectories()
    assert torch.allclose(
        GoalCost(goal, weights="all")(z)[:, 2], torch.tensor([0.75, 1.5])
    )  # 3 of 4 steps off
    weights = torch.tensor([0.0, 0.0, 1.0, 0.0])
    assert torch.allclose(GoalCost(goal, weights=weights)(z)[:, 0], torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="3 step weights for a horizon-4 rollout"):
        GoalCost(goal, weights=torch.ones(3))(z)


def test_metrics() -> None:
    z = torch.tensor([3.0, 4.0])
    assert latent_distance(z, torch.zeros(2), "l2") == 5.0
    assert latent_distance(z, torch.zeros(2), "sq_l2") == 25.0
    assert latent_distance(z, 2 * z, "cosine").abs() < 1e-6  # same direction, different norm
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        latent_distance(z, z, "l1")  # type: ignore[arg-type]


def test_select_restricts_to_one_episode() -> None:
    z, goal = trajectories()
    one = GoalCost(goal).select(1)
    assert one.batch_size == 1
    assert torch.equal(one(z[1:]), GoalCost(goal)(z)[1:])


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"goal must be \(B, D\)"):
        GoalCost(torch.zeros(2))
    with pytest.raises(ValueError, match=r"z_traj must be \(B, N, H, D\) = \(2, N, H, 2\)"):
        GoalCost(torch.zeros(2, 2))(torch.zeros(3, 1, 1, 2))
    with pytest.raises(ValueError, match="weights must be 'final', 'all', 'min' or a tensor"):
        GoalCost(torch.zeros(2, 2), weights="last")  # type: ignore[arg-type]


def test_min_weights_score_the_closest_approach_and_prefer_early_arrival():
    from thinkjepa.planning.costs import GoalCost

    goal = torch.zeros(1, 1)
    trajs = torch.tensor([[3.0, 0.0, 3.0], [3.0, 3.0, 0.0], [1.0, 1.0, 1.0]]).view(1, 3, 3, 1)  # (B, N, H, D)
    cost = GoalCost(goal, weights="min")(trajs)[0]
    assert cost.argmin() == 0 and cost[0] < cost[1] < cost[2]

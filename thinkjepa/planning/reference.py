"""A straightforward CEM, written the way public JEPA planners are: the baseline for benchmarks.

Same math as :class:`thinkjepa.planning.cem.CEMPlanner` (per-step categorical / clipped Gaussian,
refit to the ``num_elites`` best with ``momentum``, the mode evaluated as candidate 0, the best
evaluated plan returned), but planned **one episode at a time**, with a fresh distribution on every
call and no warm start. It is kept honest (no artificial slowdowns) so that
``benchmarks/bench_plan.py`` measures what batching over episodes buys, and nothing else.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from thinkjepa.planning.base import PlanResult
from thinkjepa.planning.spaces import ActionSpace, DiscreteSpace
from thinkjepa.protocols import RolloutFn


class EpisodeCost(Protocol):
    """A batched cost that can be restricted to one episode (e.g. :class:`~thinkjepa.planning.costs.GoalCost`)."""

    def __call__(self, z_traj: torch.Tensor) -> torch.Tensor: ...

    def select(self, index: int) -> EpisodeCost: ...


class ReferenceCEMPlanner:
    """Per-episode CEM; same arguments and meaning as :class:`~thinkjepa.planning.cem.CEMPlanner`.

    Args:
        horizon: Plan length ``H``.
        num_samples: Candidates ``N`` per iteration.
        iterations: Refits per episode.
        num_elites: Lowest-cost candidates the distribution is refit to.
        momentum: Weight of the previous distribution in each refit.
        init_std: Initial Gaussian std, in half-widths of the box.
        min_std: Floor on the Gaussian std, in half-widths of the box.
        min_prob: Floor on every allowed id's probability per step.
    """

    def __init__(
        self,
        horizon: int,
        num_samples: int = 300,
        iterations: int = 30,
        num_elites: int = 30,
        momentum: float = 0.1,
        init_std: float = 1.0,
        min_std: float = 0.02,
        min_prob: float = 0.02,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"ReferenceCEMPlanner: horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self.num_samples = num_samples
        self.iterations = iterations
        self.num_elites = min(num_elites, num_samples)
        self.momentum = momentum
        self.init_std = init_std
        self.min_std = min_std
        self.min_prob = min_prob

    def plan(
        self,
        z0: torch.Tensor,
        cost: EpisodeCost,
        rollout: RolloutFn,
        space: ActionSpace,
        generator: torch.Generator | None = None,
    ) -> PlanResult:
        """Plan each of the ``B`` episodes in ``z0 (B, D)`` in turn; ``cost.select(b)`` scores episode ``b``."""
        actions, costs = [], []
        with torch.no_grad():
            for b in range(z0.shape[0]):
                plan_b, cost_b = self._plan_one(z0[b : b + 1], cost.select(b), rollout, space, generator)
                actions.append(plan_b)
                costs.append(cost_b)
        return PlanResult(actions=torch.stack(actions), cost=torch.stack(costs))

    def _plan_one(
        self,
        z0: torch.Tensor,
        cost: EpisodeCost,
        rollout: RolloutFn,
        space: ActionSpace,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, n = self.horizon, self.num_samples
        z0_rep = z0.repeat(n, 1)  # (N, D)
        best_cost, best_plan = torch.tensor(float("inf")), None
        if isinstance(space, DiscreteSpace):
            probs = space.uniform(z0.device).repeat(h, 1)  # (H, K)
        else:
            low, high = space.bounds(z0.device)
            center, half = space.center_and_half_width(z0.device)
            mean = center.repeat(h, 1)  # (H, A)
            std = self.init_std * half.repeat(h, 1)  # (H, A)
        for _ in range(self.iterations):
            if isinstance(space, DiscreteSpace):
                samples = torch.multinomial(probs, n, replacement=True, generator=generator).T  # (N, H)
                samples[0] = probs.argmax(dim=-1)
            else:
                noise = torch.randn(n, h, space.dim, generator=generator, device=z0.device)
                samples = torch.clamp(mean + std * noise, low, high)  # (N, H, A)
                samples[0] = mean
            z_traj = rollout(z0_rep, samples)  # (N, H, D)
            sample_costs = cost(z_traj.unsqueeze(0))[0]  # (N,)
            elite_costs, elite_idx = sample_costs.topk(self.num_elites, largest=False)
            elites = samples[elite_idx]
            if elite_costs[0] < best_cost:
                best_cost, best_plan = elite_costs[0], elites[0]
            if isinstance(space, DiscreteSpace):
                freq = F.one_hot(elites, space.n).float().mean(dim=0)  # (H, K)
                probs = self.momentum * probs + (1 - self.momentum) * freq
                probs = probs.clamp_min(self.min_prob) * (space.uniform(z0.device) > 0)
                probs = probs / probs.sum(dim=-1, keepdim=True)
            else:
                new_std = elites.std(dim=0, unbiased=False)
                std = torch.maximum(self.momentum * std + (1 - self.momentum) * new_std, self.min_std * half)
                mean = self.momentum * mean + (1 - self.momentum) * elites.mean(dim=0)
        return best_plan, best_cost

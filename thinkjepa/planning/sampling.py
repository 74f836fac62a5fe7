"""The population loop CEM and MPPI share: sample, evaluate in one rollout, refit to weighted samples.

CEM and MPPI differ only in how a population's costs become sample weights (uniform over the
elites versus a softmax of the costs); everything else lives here:

* **Discrete spaces**: an independent categorical per step, ``probs (B, H, K)``, zero outside the
  allowed ids. Samples come from one batched ``torch.multinomial`` over ``B·H`` rows; the refit is
  the weighted frequency of each id (a ``scatter_add``, no one-hot tensor).
* **Continuous spaces**: an independent Gaussian per step and dimension, ``mean/std (B, H, A)``;
  samples are clipped to the box. Spreads are given in half-widths of the box, so defaults do not
  depend on the action units.
* Candidate 0 of every population is the distribution's mode (argmax / mean): a converged
  distribution's best guess is always evaluated, so the returned plan is never worse than it.
* A warm start re-uses the shifted previous distribution, but widens it again (uniform mixing for
  categoricals, ``std`` reset for Gaussians): a collapsed distribution would pin the next plan to the
  last one even when the world has moved on. The shifted previous best plan is candidate 1 of the
  first population.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from thinkjepa.planning.base import BestTracker, Planner, PlanResult, evaluate
from thinkjepa.planning.spaces import ActionSpace, BoxSpace, DiscreteSpace
from thinkjepa.protocols import CostFn, RolloutFn


class SamplingPlanner(Planner):
    """Population-based planner; subclasses turn costs into sample weights.

    Args:
        horizon: Plan length ``H``.
        num_samples: Candidates ``N`` per episode and iteration.
        iterations: Refits of the distribution; also the number of rollout calls per ``plan``.
        momentum: Weight of the previous distribution in each refit (0 = replace it).
        init_std: Initial Gaussian std, in half-widths of the box (continuous spaces).
        min_std: Lower bound on the Gaussian std, in half-widths of the box (continuous spaces).
        adapt_std: Refit the Gaussian std to the weighted samples; if ``False`` it stays ``init_std``.
        warm_mix: Weight of the uniform distribution mixed into a warm-started categorical.
        min_prob: Floor on every allowed id's probability per step (discrete spaces), then renormalised.
        population_decay: Continuous spaces: iteration ``i`` samples ``num_samples * population_decay ** i``
            candidates (at least ``min_population``), as iCEM shrinks its population once the distribution has
            narrowed (1 = a constant population).
        min_population: The smallest population ``population_decay`` shrinks to.
        converge_std: Continuous spaces: stop before ``iterations`` once every episode's Gaussian std is below
            this many half-widths of the box in every step and dimension (its elites agree; 0 = never stop early).
    """

    def __init__(
        self,
        horizon: int,
        num_samples: int,
        iterations: int,
        momentum: float,
        init_std: float,
        min_std: float,
        adapt_std: bool,
        warm_mix: float,
        min_prob: float = 0.0,
        population_decay: float = 1.0,
        min_population: int = 1,
        converge_std: float = 0.0,
    ) -> None:
        super().__init__(horizon)
        name = type(self).__name__
        if num_samples < 1 or iterations < 1:
            raise ValueError(
                f"{name}: num_samples and iterations must be >= 1, got {num_samples}, {iterations}"
            )
        if not 0.0 <= momentum < 1.0 or not 0.0 <= warm_mix <= 1.0:
            raise ValueError(
                f"{name}: need 0 <= momentum < 1 and 0 <= warm_mix <= 1, got {momentum}, {warm_mix}"
            )
        if not 0.0 <= min_prob < 1.0:
            raise ValueError(f"{name}: need 0 <= min_prob < 1, got {min_prob}")
        if init_std <= 0 or min_std < 0:
            raise ValueError(f"{name}: need init_std > 0 and min_std >= 0, got {init_std}, {min_std}")
        if not 0.0 < population_decay <= 1.0 or min_population < 1 or converge_std < 0:
            raise ValueError(f"{name}: need 0 < population_decay <= 1, min_population >= 1 and converge_std >= 0, "
                             f"got {population_decay}, {min_population}, {converge_std}")
        self.population_decay, self.min_population, self.converge_std = population_decay, min_population, converge_std
        self.last_iterations = 0  # iterations the last plan ran (early stopping)
        self.last_evaluations = 0  # candidate sequences the last plan rolled out, over all episodes
        self.num_samples = num_samples
        self.iterations = iterations
        self.momentum = momentum
        self.init_std = init_std
        self.min_std = min_std
        self.adapt_std = adapt_std
        self.warm_mix = warm_mix
        self.min_prob = min_prob

    @abstractmethod
    def _weights(self, costs: torch.Tensor) -> torch.Tensor:
        """``costs (B, N)`` (``inf`` for diverged candidates) -> weights ``(B, N)``, rows summing to 1."""

    def _plan(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: ActionSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        with torch.no_grad():
            if isinstance(space, DiscreteSpace):
                return self._plan_discrete(z0, cost, rollout, space, init, generator)
            return self._plan_continuous(z0, cost, rollout, space, init, generator)

    def _refit_weights(self, costs: torch.Tensor) -> torch.Tensor:
        return self._weights(torch.nan_to_num(costs, nan=float("inf")))  # (B, N)

    def _plan_discrete(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: DiscreteSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        b, h, k, n = z0.shape[0], self.horizon, space.n, self.num_samples
        uniform = space.uniform(z0.device)  # (K,)
        allowed = uniform > 0  # (K,)
        probs = uniform.expand(b, h, k).clone()  # (B, H, K)
        if init is not None:
            probs = (1 - self.warm_mix) * _allowed_probs(init, space) + self.warm_mix * probs
        tracker = BestTracker(b, z0.device)
        for it in range(self.iterations):
            flat = torch.multinomial(probs.reshape(b * h, k), n, replacement=True, generator=generator)
            samples = flat.view(b, h, n).transpose(1, 2).contiguous()  # (B, N, H)
            samples[:, 0] = probs.argmax(dim=-1)
            if it == 0 and init is not None and n > 1:
                samples[:, 1] = init.actions
            costs = evaluate(z0, samples, cost, rollout)  # (B, N)
            tracker.update(samples, costs)
            weights = self._refit_weights(costs).to(probs.dtype)  # (B, N)
            freq = torch.zeros_like(probs).scatter_add_(
                2, samples.transpose(1, 2), weights.unsqueeze(1).expand(b, h, n)
            )  # (B, H, K)
            probs = self.momentum * probs + (1 - self.momentum) * freq
            if self.min_prob > 0:
                probs = probs.clamp_min(self.min_prob) * allowed
                probs = probs / probs.sum(dim=-1, keepdim=True)
        actions, best_cost = tracker.result()
        return PlanResult(actions=actions, cost=best_cost, probs=probs)

    def _plan_continuous(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: BoxSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        b, h, a, n = z0.shape[0], self.horizon, space.dim, self.num_samples
        dtype = z0.dtype if z0.is_floating_point() else torch.float32
        low, high = space.bounds(z0.device, dtype)  # (A,), (A,)
        center, half = space.center_and_half_width(z0.device, dtype)  # (A,), (A,)
        mean = center.expand(b, h, a).clone()  # (B, H, A)
        if init is not None:
            mean = (init.mean if init.mean is not None else init.actions).to(dtype).clamp(low, high)
        std = (self.init_std * half).expand(b, h, a).clone()  # (B, H, A)
        min_std = self.min_std * half  # (A,)
        tracker = BestTracker(b, z0.device)
        self.last_evaluations = 0
        for it in range(self.iterations):
            n = max(self.min_population, round(self.num_samples * self.population_decay**it))
            noise = torch.randn(b, n, h, a, generator=generator, device=z0.device, dtype=dtype)
            samples = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(low, high)  # (B, N, H, A)
            samples[:, 0] = mean
            if it == 0 and init is not None and n > 1:
                samples[:, 1] = init.actions.to(dtype).clamp(low, high)
            costs = evaluate(z0, samples, cost, rollout)  # (B, N)
            tracker.update(samples, costs)
            weights = self._refit_weights(costs).to(dtype)  # (B, N)
            new_mean = torch.einsum("bn,bnha->bha", weights, samples)  # (B, H, A)
            if self.adapt_std:
                var = torch.einsum("bn,bnha->bha", weights, (samples - new_mean.unsqueeze(1)) ** 2)
                std = torch.maximum(self.momentum * std + (1 - self.momentum) * var.sqrt(), min_std)
            mean = self.momentum * mean + (1 - self.momentum) * new_mean
            self.last_iterations, self.last_evaluations = it + 1, self.last_evaluations + b * n
            if self.converge_std > 0 and bool((std <= self.converge_std * half).all()):
                break
        actions, best_cost = tracker.result()
        return PlanResult(actions=actions, cost=best_cost, mean=mean, std=std)


def _allowed_probs(init: PlanResult, space: DiscreteSpace) -> torch.Tensor:
    """The (shifted) distribution of a previous plan, restricted to the allowed ids: ``(B, H, K)``."""
    if init.probs is not None:
        base = init.probs.float().clamp_min(0)
    else:
        base = torch.nn.functional.one_hot(init.actions, space.n).float()
    base = base * space.uniform(base.device).gt(0)  # zero mass on disallowed ids
    total = base.sum(dim=-1, keepdim=True)  # (B, H, 1)
    return torch.where(total > 0, base / total.clamp_min(1e-12), space.uniform(base.device))

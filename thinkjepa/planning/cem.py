"""Cross-entropy method: refit the sampling distribution to the best ``num_elites`` candidates.

Batched over episodes (see :mod:`thinkjepa.planning.base`): ``iterations`` rollout calls of
``B·num_samples`` rows each, whatever ``B`` is. Discrete spaces use a per-step categorical refit to
elite frequencies, continuous spaces a per-step Gaussian clipped to the box (the shared loop is in
:mod:`thinkjepa.planning.sampling`).
"""

from __future__ import annotations

import torch

from thinkjepa.planning.sampling import SamplingPlanner


class CEMPlanner(SamplingPlanner):
    """Cross-entropy method planner for discrete and continuous action spaces.

    Args:
        horizon: Plan length ``H``.
        num_samples: Candidates ``N`` per episode and iteration.
        iterations: Refits of the distribution, i.e. rollout calls per ``plan``.
        num_elites: Lowest-cost candidates the distribution is refit to (capped at ``num_samples``).
        momentum: Weight of the previous distribution in each refit (smoothing; 0 = replace it).
        init_std: Initial Gaussian std, in half-widths of the box (continuous spaces).
        min_std: Floor on the Gaussian std, in half-widths of the box (continuous spaces).
        warm_mix: Weight of the uniform distribution mixed into a warm-started categorical.
        min_prob: Floor on every allowed id's probability per step (discrete spaces): keeps sampling
            around a collapsed categorical, as ``min_std`` does for a Gaussian.
        population_decay: Continuous spaces: shrink the population by this factor every iteration (iCEM),
            never below ``2 * num_elites``.
        converge_std: Continuous spaces: stop once every std is below this many half-widths (0 = never early).
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
        warm_mix: float = 0.1,
        min_prob: float = 0.02,
        population_decay: float = 1.0,
        converge_std: float = 0.0,
    ) -> None:
        super().__init__(
            horizon,
            num_samples=num_samples,
            iterations=iterations,
            momentum=momentum,
            init_std=init_std,
            min_std=min_std,
            adapt_std=True,
            warm_mix=warm_mix,
            min_prob=min_prob,
            population_decay=population_decay,
            min_population=max(1, min(num_samples, 2 * num_elites)),
            converge_std=converge_std,
        )
        if num_elites < 1:
            raise ValueError(f"CEMPlanner: num_elites must be >= 1, got {num_elites}")
        self.num_elites = num_elites

    def _weights(self, costs: torch.Tensor) -> torch.Tensor:
        elites = min(self.num_elites, costs.shape[1])
        idx = costs.topk(elites, dim=1, largest=False).indices  # (B, E)
        return torch.zeros_like(costs).scatter_(1, idx, 1.0 / elites)  # (B, N)

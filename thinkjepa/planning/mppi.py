"""Model-predictive path integral control: refit the distribution to exponentially weighted samples.

Each candidate gets weight ``softmax(-(c - c_min) / (temperature · s))`` within its episode, where
``s`` is the episode's cost standard deviation when ``normalize_costs`` is on: latent distances have
no fixed scale, and normalising makes ``temperature`` mean the same thing for every world model and
at every iteration. Discrete spaces use the same categorical refit as CEM with these weights instead
of elite counts. The Gaussian noise is fixed (``noise_std``) unless ``adapt_std`` is set.
"""

from __future__ import annotations

import torch

from thinkjepa.planning.sampling import SamplingPlanner


class MPPIPlanner(SamplingPlanner):
    """MPPI planner for discrete and continuous action spaces.

    Args:
        horizon: Plan length ``H``.
        num_samples: Candidates ``N`` per episode and iteration.
        iterations: Reweighting rounds, i.e. rollout calls per ``plan``.
        temperature: Softmax temperature on (normalised) costs; lower is greedier.
        noise_std: Gaussian sampling std, in half-widths of the box (continuous spaces).
        momentum: Weight of the previous distribution in each update (0 = replace it).
        normalize_costs: Divide costs by their per-episode standard deviation before weighting.
        adapt_std: Refit the Gaussian std to the weighted samples instead of keeping ``noise_std``.
        min_std: Floor on an adapted std, in half-widths of the box.
        warm_mix: Weight of the uniform distribution mixed into a warm-started categorical.
        min_prob: Floor on every allowed id's probability per step (discrete spaces).
    """

    def __init__(
        self,
        horizon: int,
        num_samples: int = 300,
        iterations: int = 10,
        temperature: float = 1.0,
        noise_std: float = 0.5,
        momentum: float = 0.0,
        normalize_costs: bool = True,
        adapt_std: bool = False,
        min_std: float = 0.02,
        warm_mix: float = 0.1,
        min_prob: float = 0.02,
    ) -> None:
        super().__init__(
            horizon,
            num_samples=num_samples,
            iterations=iterations,
            momentum=momentum,
            init_std=noise_std,
            min_std=min_std,
            adapt_std=adapt_std,
            warm_mix=warm_mix,
            min_prob=min_prob,
        )
        if temperature <= 0:
            raise ValueError(f"MPPIPlanner: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalize_costs = normalize_costs

    def _weights(self, costs: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(costs)  # (B, N)
        safe = torch.where(finite, costs, torch.zeros_like(costs))
        count = finite.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
        best = (
            torch.where(finite, costs, torch.full_like(costs, float("inf"))).min(dim=1, keepdim=True).values
        )
        advantage = torch.where(finite, safe - best.nan_to_num(posinf=0.0), torch.zeros_like(costs))  # (B, N)
        scale = torch.ones_like(best)
        if self.normalize_costs:
            mean = safe.sum(dim=1, keepdim=True) / count
            var = (torch.where(finite, (safe - mean) ** 2, torch.zeros_like(costs))).sum(
                dim=1, keepdim=True
            ) / count
            scale = var.sqrt().clamp_min(1e-8)
        logits = -advantage / (self.temperature * scale)
        logits = torch.where(finite, logits, torch.full_like(logits, float("-inf")))
        weights = torch.softmax(logits, dim=1)  # (B, N); NaN rows when nothing is finite
        none_finite = ~finite.any(dim=1, keepdim=True)
        return torch.where(none_finite, torch.full_like(weights, 1.0 / costs.shape[1]), weights)

"""Gradient-based planning: Adam on the plan itself, through the differentiable rollout and cost.

* **Continuous spaces**: the plan is parametrised in box coordinates ``u ∈ [-1, 1]`` (``a = center +
  half_width · u``) so ``lr`` means the same for any action units; after each step ``u`` is projected
  back onto the box.
* **Discrete spaces**: the plan is per-step logits over the allowed ids; the rollout receives the
  softmax relaxation as probabilities ``(M, H, K)`` (zero on disallowed ids), with the softmax
  temperature annealed geometrically from ``tau_start`` to ``tau_end`` so the relaxation hardens into
  a one-hot plan. The *hard* plans (argmax per step) ride in the same rollout call as one-hot
  probability rows, so the returned plan and its cost are exact, not relaxed, and a plan call still
  costs exactly ``iterations`` rollout calls.
* ``num_restarts`` independent plans per episode are optimised side by side (restart 0 starts at the
  warm start, or the box center / uniform logits); the best evaluated plan wins.
* The learning rate is cosine-annealed to zero over the iterations, so plans settle instead of
  oscillating around the kink that an ``l2`` cost has at the goal.
* Gradients are taken with ``torch.autograd.grad`` w.r.t. the plan only, so a world model whose
  parameters require grad never accumulates ``.grad`` from planning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from thinkjepa.planning.base import BestTracker, Planner, PlanResult, evaluate
from thinkjepa.planning.spaces import ActionSpace, BoxSpace, DiscreteSpace
from thinkjepa.protocols import CostFn, RolloutFn


class GradientPlanner(Planner):
    """Gradient-descent planner with restarts, projected (continuous) or softmax-relaxed (discrete).

    Args:
        horizon: Plan length ``H``.
        iterations: Evaluations per restart, i.e. rollout calls per ``plan`` (one Adam step between each).
        lr: Initial Adam learning rate, in box half-widths (continuous) or logits (discrete).
        num_restarts: Plans ``R`` optimised in parallel per episode.
        init_spread: Random restarts start uniformly in ``±init_spread`` half-widths around the center.
        logit_std: Std of the random initial logits of discrete restarts.
        tau_start: Initial softmax temperature of the discrete relaxation.
        tau_end: Final softmax temperature of the discrete relaxation.
    """

    def __init__(
        self,
        horizon: int,
        iterations: int = 50,
        lr: float = 0.3,
        num_restarts: int = 32,
        init_spread: float = 1.0,
        logit_std: float = 1.0,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
    ) -> None:
        super().__init__(horizon)
        if iterations < 1 or num_restarts < 1:
            raise ValueError(
                f"GradientPlanner: iterations and num_restarts must be >= 1, got {iterations}, {num_restarts}"
            )
        if lr <= 0 or tau_start <= 0 or tau_end <= 0:
            raise ValueError(
                f"GradientPlanner: lr, tau_start, tau_end must be > 0, got {lr}, {tau_start}, {tau_end}"
            )
        self.iterations = iterations
        self.lr = lr
        self.num_restarts = num_restarts
        self.init_spread = init_spread
        self.logit_std = logit_std
        self.tau_start = tau_start
        self.tau_end = tau_end

    def _plan(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: ActionSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        with torch.enable_grad():
            if isinstance(space, DiscreteSpace):
                return self._plan_discrete(z0, cost, rollout, space, init, generator)
            return self._plan_continuous(z0, cost, rollout, space, init, generator)

    def _optimizer(
        self, param: torch.Tensor
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        optimizer = torch.optim.Adam([param], lr=self.lr)
        steps = max(self.iterations - 1, 1)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    def _step(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        param: torch.Tensor,
        loss: torch.Tensor,
    ) -> None:
        if not loss.requires_grad:
            raise RuntimeError(
                "GradientPlanner: the cost does not depend differentiably on the actions; the rollout "
                "and cost must be differentiable (no torch.no_grad, no argmax/long casts inside)"
            )
        (param.grad,) = torch.autograd.grad(loss, [param])
        optimizer.step()
        schedule.step()

    def _plan_continuous(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: BoxSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        b, r, h, a = z0.shape[0], self.num_restarts, self.horizon, space.dim
        dtype = z0.dtype if z0.is_floating_point() else torch.float32
        center, half = space.center_and_half_width(z0.device, dtype)  # (A,), (A,)
        u = torch.rand(b, r, h, a, generator=generator, device=z0.device, dtype=dtype)
        u = (2 * u - 1) * self.init_spread  # (B, R, H, A) in box coordinates
        u[:, 0] = 0.0 if init is None else (init.actions.to(dtype) - center) / half
        u = u.clamp(-1, 1).requires_grad_(True)
        optimizer, schedule = self._optimizer(u)
        tracker = BestTracker(b, z0.device)
        for it in range(self.iterations):
            actions = center + half * u  # (B, R, H, A)
            costs = evaluate(z0, actions, cost, rollout)  # (B, R)
            tracker.update(actions, costs)
            if it < self.iterations - 1:
                self._step(optimizer, schedule, u, costs.sum())
                with torch.no_grad():
                    u.clamp_(-1, 1)
        best, best_cost = tracker.result()
        return PlanResult(actions=best, cost=best_cost, mean=best.clone())

    def _plan_discrete(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: DiscreteSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        b, r, h, k = z0.shape[0], self.num_restarts, self.horizon, space.n
        dtype = z0.dtype if z0.is_floating_point() else torch.float32
        ids = space.ids(z0.device)  # (Ka,)
        select = F.one_hot(ids, k).to(dtype)  # (Ka, K): allowed-id probabilities -> all-id probabilities
        logits = self.logit_std * torch.randn(
            b, r, h, len(ids), generator=generator, device=z0.device, dtype=dtype
        )
        logits[:, 0] = 0.0
        if init is not None:
            prior = init.probs if init.probs is not None else F.one_hot(init.actions, k).to(dtype)
            logits[:, 0] = prior.to(dtype)[..., ids].clamp_min(1e-4).log()
        logits.requires_grad_(True)
        optimizer, schedule = self._optimizer(logits)
        tracker = BestTracker(b, z0.device)
        for it in range(self.iterations):
            frac = it / max(self.iterations - 1, 1)
            tau = self.tau_start * math.exp(frac * math.log(self.tau_end / self.tau_start))
            soft = torch.softmax(logits / tau, dim=-1) @ select  # (B, R, H, K)
            hard_ids = ids[logits.detach().argmax(dim=-1)]  # (B, R, H)
            if it == 0 and init is not None:
                hard_ids[:, -1] = init.actions  # the shifted previous plan is evaluated as-is
            hard = F.one_hot(hard_ids, k).to(dtype)  # (B, R, H, K)
            costs = evaluate(z0, torch.cat([soft, hard], dim=1), cost, rollout)  # (B, 2R)
            tracker.update(hard_ids, costs[:, r:], extra=soft)
            if it < self.iterations - 1:
                self._step(optimizer, schedule, logits, costs[:, :r].sum())
        best, best_cost = tracker.result()
        return PlanResult(actions=best, cost=best_cost, probs=tracker.extra)

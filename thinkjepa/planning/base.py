"""The planner interface and what every planner shares.

Design decisions:

* **One call, all episodes.** ``plan`` takes ``B`` episodes at once. Each iteration, the ``N``
  candidate plans of every episode are flattened to ``M = B·N`` rows (episode-major: row ``b·N + n``
  is candidate ``n`` of episode ``b``, ``z0[b]`` repeated) and pushed through **one** ``rollout`` call.
  There is no Python loop over episodes anywhere in a planner, so a planner call costs
  ``iterations`` rollout calls whatever ``B`` is.
* **Rollout convention.** ``rollout(z0 (M, D), actions) -> (M, H, D)`` returns the predicted latents
  of steps ``1..H`` (``z0`` excluded), where ``actions`` is ``long (M, H)`` for discrete plans,
  ``float (M, H, K)`` probabilities for relaxed discrete plans (the gradient planner) and
  ``float (M, H, A)`` for continuous plans. The world model handles all three.
* **Cost convention.** ``cost(z_traj (B, N, H, D)) -> (B, N)``, lower is better; a cost is tied to
  its ``B`` episodes (e.g. one goal each), see :class:`thinkjepa.planning.costs.GoalCost`.
* **Elite tracking.** Planners return the best plan they *evaluated*, with its predicted cost, never
  an unevaluated distribution mode, so ``PlanResult.cost`` is always the cost of ``actions``.
* **Warm start.** ``init`` is the previous MPC step's result. The planner shifts it by one step
  (:meth:`PlanResult.shifted`: drop the executed first action, repeat the last step) and starts its
  search there; the shifted plan is also evaluated as a candidate, so a warm start never does worse
  than re-using the previous plan.
* **Reproducibility.** All randomness comes from ``generator`` (a ``torch.Generator`` on ``z0``'s
  device); the same seed gives the same plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import torch

from thinkjepa.planning.spaces import ActionSpace, BoxSpace, DiscreteSpace
from thinkjepa.protocols import CostFn, RolloutFn


@dataclass
class PlanResult:
    """A plan for ``B`` episodes and the search state a warm start resumes from.

    Attributes:
        actions: The best plan found: ``long (B, H)`` for a discrete space, ``float (B, H, A)`` for a box.
        cost: ``(B,)`` predicted cost of ``actions`` (lower is better).
        probs: ``(B, H, K)`` per-step categorical distribution (discrete planners), else ``None``.
        mean: ``(B, H, A)`` per-step Gaussian mean (continuous planners), else ``None``.
        std: ``(B, H, A)`` per-step Gaussian standard deviation (sampling planners), else ``None``.
    """

    actions: torch.Tensor
    cost: torch.Tensor
    probs: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of episodes ``B``."""
        return self.actions.shape[0]

    @property
    def horizon(self) -> int:
        """Plan length ``H``."""
        return self.actions.shape[1]

    def first_action(self) -> torch.Tensor:
        """The action to execute now: ``long (B,)`` or ``float (B, A)``."""
        return self.actions[:, 0]

    def shifted(self, steps: int = 1) -> PlanResult:
        """The plan ``steps`` steps later: drop the executed actions, pad by repeating the last step.

        Every per-step field (``actions``, ``probs``, ``mean``, ``std``) is shifted the same way;
        ``cost`` is carried over unchanged and describes the unshifted plan.
        """
        if not 0 <= steps < self.horizon:
            raise ValueError(
                f"can shift a horizon-{self.horizon} plan by 0..{self.horizon - 1} steps, got {steps}"
            )
        if steps == 0:
            return self

        def shift(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            tail = x[:, -1:].expand(-1, steps, *x.shape[2:])  # (B, steps, ...)
            return torch.cat([x[:, steps:], tail], dim=1)  # (B, H, ...)

        per_step = {f.name: shift(getattr(self, f.name)) for f in fields(self) if f.name != "cost"}
        return replace(self, **per_step)

    def check(self, space: ActionSpace, batch: int, horizon: int, name: str = "init") -> None:
        """Raise ``ValueError`` unless this result fits ``batch`` episodes of ``horizon`` steps in ``space``."""
        space.check(self.actions, batch, horizon, name=f"{name}.actions")
        if tuple(self.cost.shape) != (batch,):
            raise ValueError(f"{name}.cost must be ({batch},), got {tuple(self.cost.shape)}")
        if self.probs is not None:
            if not isinstance(space, DiscreteSpace):
                raise ValueError(
                    f"{name}.probs is set but the space is {space}; probs belong to discrete plans"
                )
            if tuple(self.probs.shape) != (batch, horizon, space.n):
                raise ValueError(
                    f"{name}.probs must be ({batch}, {horizon}, K) for a DiscreteSpace with K={space.n}, "
                    f"got {tuple(self.probs.shape)}"
                )
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and (
                not isinstance(space, BoxSpace) or tuple(value.shape) != (batch, horizon, space.dim)
            ):
                raise ValueError(
                    f"{name}.{key} must be ({batch}, {horizon}, A) for a BoxSpace, "
                    f"got {tuple(value.shape)} for {space}"
                )


class Planner(ABC):
    """Finds action sequences whose world-model rollout minimises a cost, for a batch of episodes.

    Args:
        horizon: Plan length ``H`` (steps rolled out per candidate), at least 1.
    """

    def __init__(self, horizon: int) -> None:
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"{type(self).__name__}: horizon must be an int >= 1, got {horizon!r}")
        self.horizon = horizon

    def plan(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: ActionSpace,
        init: PlanResult | None = None,
        generator: torch.Generator | None = None,
    ) -> PlanResult:
        """Plan ``horizon`` actions for each of ``B`` episodes.

        Args:
            z0: ``(B, D)`` current latents, one per episode (treated as constants).
            cost: ``cost(z_traj (B, N, H, D)) -> (B, N)``, lower is better.
            rollout: ``rollout(z0 (M, D), actions) -> (M, H, D)`` with actions ``long (M, H)``,
                ``float (M, H, K)`` probabilities or ``float (M, H, A)``; see the module docstring.
            space: The action space to search.
            init: The previous MPC step's result; it is shifted by one step and warm-starts the search.
            generator: Source of randomness, on ``z0``'s device; seed it for reproducible plans.

        Returns:
            The best plan found per episode, its predicted cost, and the search state for warm starts.
        """
        if z0.dim() < 2 or z0.shape[0] < 1:
            raise ValueError(f"z0 must be (B, D) with B >= 1, got {tuple(z0.shape)}")
        if not isinstance(space, DiscreteSpace | BoxSpace):
            raise TypeError(f"space must be a DiscreteSpace or BoxSpace, got {type(space).__name__}")
        if generator is not None and generator.device.type != z0.device.type:
            raise ValueError(
                f"generator is on {generator.device} but z0 is on {z0.device}; put them together"
            )
        if init is not None:
            init.check(space, z0.shape[0], self.horizon)
            init = init.shifted(1) if self.horizon > 1 else init
        return self._plan(z0.detach(), cost, rollout, space, init, generator)

    @abstractmethod
    def _plan(
        self,
        z0: torch.Tensor,
        cost: CostFn,
        rollout: RolloutFn,
        space: ActionSpace,
        init: PlanResult | None,
        generator: torch.Generator | None,
    ) -> PlanResult:
        """Plan with validated inputs; ``init`` is already shifted."""


def evaluate(z0: torch.Tensor, actions: torch.Tensor, cost: CostFn, rollout: RolloutFn) -> torch.Tensor:
    """Cost of ``N`` candidate plans per episode, in one rollout call.

    Args:
        z0: ``(B, D)`` start latents.
        actions: ``(B, N, H)`` long, or ``(B, N, H, K|A)`` float candidates.
        cost: ``(B, N, H, D) -> (B, N)``.
        rollout: ``(M, D), (M, H[, K|A]) -> (M, H, D)`` with ``M = B·N``.

    Returns:
        ``(B, N)`` costs.
    """
    b, n, h = actions.shape[:3]
    z0_flat = z0.unsqueeze(1).expand(b, n, *z0.shape[1:]).reshape(b * n, *z0.shape[1:])  # (M, D)
    z_traj = rollout(z0_flat, actions.reshape(b * n, *actions.shape[2:]))  # (M, H, D)
    expected = (b * n, h, *z0.shape[1:])
    if tuple(z_traj.shape) != expected:
        raise ValueError(
            f"rollout returned {tuple(z_traj.shape)} for z0 {tuple(z0_flat.shape)} and actions "
            f"{tuple(actions.reshape(b * n, *actions.shape[2:]).shape)}; expected (M, H, D) = {expected}"
        )
    costs = cost(z_traj.reshape(b, n, *z_traj.shape[1:]))  # (B, N)
    if tuple(costs.shape) != (b, n):
        raise ValueError(
            f"cost returned {tuple(costs.shape)} for z_traj ({b}, {n}, ...); expected (B, N) = {(b, n)}"
        )
    return costs


class BestTracker:
    """Keeps the lowest-cost plan seen so far per episode (elite tracking across iterations).

    Args:
        batch: Number of episodes ``B``.
        device: Where the running best lives.
    """

    def __init__(self, batch: int, device: torch.device) -> None:
        self.cost = torch.full((batch,), float("inf"), device=device)
        self.actions: torch.Tensor | None = None
        self.extra: torch.Tensor | None = None

    def update(self, actions: torch.Tensor, costs: torch.Tensor, extra: torch.Tensor | None = None) -> None:
        """Offer ``actions (B, N, H[, A])`` with ``costs (B, N)``; ``extra (B, N, ...)`` rides along."""
        costs = torch.nan_to_num(costs.detach(), nan=float("inf"))  # a diverged candidate never wins
        best_cost, best_idx = costs.min(dim=1)  # (B,), (B,)
        rows = torch.arange(costs.shape[0], device=costs.device)
        candidate = actions[rows, best_idx].detach()  # (B, H[, A])
        if self.actions is None:
            self.actions = candidate.clone()
        better = best_cost < self.cost  # (B,)
        mask = better.view(-1, *([1] * (candidate.dim() - 1)))
        self.actions = torch.where(mask, candidate, self.actions)
        if extra is not None:
            candidate_extra = extra[rows, best_idx].detach()
            self.extra = candidate_extra.clone() if self.extra is None else self.extra
            self.extra = torch.where(
                better.view(-1, *([1] * (candidate_extra.dim() - 1))), candidate_extra, self.extra
            )
        self.cost = torch.where(better, best_cost.to(self.cost.dtype), self.cost)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actions, cost)`` of the best plans seen."""
        if self.actions is None:
            raise RuntimeError("BestTracker.result() called before any update()")
        return self.actions, self.cost

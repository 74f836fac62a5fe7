"""Batched latent model-predictive control toward one goal latent per episode.

Both policies are built on :class:`LatentMPC`: the flat baseline gives it a fixed goal (the encoded
goal image), the hierarchical policy swaps the goal whenever the thinker proposes a new subgoal.
Planning happens for all *active* episodes of a batch in one planner call; finished episodes drop
out of the batch, and each episode keeps its own warm start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch

from thinkjepa.planning.base import Planner, PlanResult
from thinkjepa.planning.costs import GoalCost, Metric
from thinkjepa.planning.spaces import ActionSpace, BoxSpace, DiscreteSpace
from thinkjepa.protocols import RolloutFn, WorldModel

COSTS = ("auto", "latent", "learned")
STEPS = ("final", "all", "min")


class ActionsToGo:
    """The learned cost: the head's estimate of the actions from ``z`` to the goal, plus
    ``latent_weight`` x latent L2.

    The head ranks far states (L2 is flat beyond two steps); L2 pins down the exact goal state near
    the end, where the head is coarse (its held-out error is ~2 actions). On the tiny BabyAI model,
    flat GoToLocal success was 77/100 with the head alone and 82/100 with ``latent_weight=1`` (CEM
    horizon 6); with horizon 8, 80/100 at ``latent_weight=1`` and 86/100 at 10. A thinker's subgoal is
    never exactly a real latent, and the head, trained on real pairs, misranks the states near it: at
    weight 10 the hierarchical agent solved 60/100 instead of 43/100 (``experiments/thinker_poses.py``).
    """

    def __init__(self, head, latent_weight: float = 1.0, quantile: float | None = None) -> None:
        self.head, self.latent_weight, self.quantile = head, latent_weight, quantile

    def __call__(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        out = self.head(z, goal) if self.quantile is None else self.head.quantile(z, goal, self.quantile)
        if self.latent_weight:
            out = out + self.latent_weight * torch.linalg.vector_norm(z - goal, dim=-1)
        return out


def check_space(world_model: WorldModel, space: ActionSpace) -> None:
    """Refuse, naming both sides, an action space the world model was not trained on: discrete actions for a
    continuous model or the reverse, another number of actions, another action (block) dimension."""
    num_actions = getattr(world_model, "num_actions", None)
    continuous = getattr(world_model, "continuous", None)
    if isinstance(space, DiscreteSpace):
        if continuous:
            raise ValueError(f"the planner's action space has {space.n} discrete actions but the world model was "
                             f"trained on {num_actions}-D continuous actions (predictor.action_space='continuous')")
        if num_actions is not None and space.n != num_actions:
            raise ValueError(f"the planner's action space has {space.n} discrete actions but the world model was "
                             f"trained with {num_actions} (predictor.num_actions)")
    elif isinstance(space, BoxSpace):
        if continuous is False:
            raise ValueError(f"the planner's action space is a {space.dim}-D box but the world model was trained on "
                             f"{num_actions} discrete actions (predictor.action_space='discrete')")
        if num_actions is not None and space.dim != num_actions:
            raise ValueError(f"the planner's action space is a {space.dim}-D box but the world model takes "
                             f"{num_actions}-D actions (predictor.num_actions: the action dimension times the block)")


@dataclass(frozen=True)
class PlanningCost:
    """What latent MPC minimises: a distance from rolled-out latents to the goal, and which steps count.

    One value shared by every agent of an evaluation (flat, hierarchical, oracle), so they plan with
    the same cost; on the command line ``--agent.cost "{distance: latent, latent_weight: 0.5}"``.

    Args:
        distance: ``"latent"`` (L2 to the goal latent), ``"learned"`` (the world model's goal-distance
            head, :mod:`thinkjepa.train.distance`, in actions, plus ``latent_weight`` x L2; an error
            without a head) or ``"auto"`` (learned when the world model has a head, else latent).
        latent_weight: Weight of latent L2 in the learned distance (0 = the head alone).
        steps: Which rolled-out steps the distance weighs: ``"final"``, ``"all"`` or ``"min"`` (the
            closest approach plus the steps spent to get there, see
            :class:`~thinkjepa.planning.costs.GoalCost`).
        quantile: With a learned distance: the head's ``quantile`` of the actions to go instead of its mean
            (:meth:`~thinkjepa.worldmodel.goal_distance.GoalDistance.quantile`; ``None``: the mean). For heads
            trained on how long recordings took (:class:`~thinkjepa.train.distance.TrajectoryDistanceDataModule`),
            whose mean counts the detours the recordings made.
        rollout_precision: ``"32"``, or ``"bf16"``: the world model's rollouts run under bfloat16
            autocast (its matrix products in bf16, about twice as fast on CPUs with AVX512-BF16 and on
            GPUs); the predicted latents come back as float32 and the distance is computed in float32.
    """

    distance: Literal["auto", "latent", "learned"] = "auto"
    latent_weight: float = 1.0
    steps: Literal["final", "all", "min"] = "min"
    rollout_precision: Literal["32", "bf16"] = "32"
    quantile: float | None = None

    def __post_init__(self) -> None:
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ValueError(f"PlanningCost.quantile must be in (0, 1) or None, got {self.quantile}")
        if self.distance not in COSTS:
            raise ValueError(f"PlanningCost.distance must be one of {COSTS}, got {self.distance!r}")
        if self.steps not in STEPS:
            raise ValueError(f"PlanningCost.steps must be one of {STEPS}, got {self.steps!r}")
        if not self.latent_weight >= 0:
            raise ValueError(f"PlanningCost.latent_weight must be >= 0, got {self.latent_weight}")
        if self.rollout_precision not in ("32", "bf16"):
            raise ValueError(f"PlanningCost.rollout_precision must be '32' or 'bf16', got {self.rollout_precision!r}")

    def metric(self, world_model: WorldModel) -> tuple[Metric, float]:
        """The goal distance for ``world_model`` and the per-step cost that goes with it.

        Returns:
            ``(metric, step_cost)`` for :class:`~thinkjepa.planning.costs.GoalCost`: a learned distance
            counts actions, so each step of the rollout adds 1; with L2 the step cost only breaks ties.

        Raises:
            ValueError: ``distance="learned"`` and the world model has no goal-distance head.
        """
        head = getattr(world_model, "distance", None)
        if self.distance == "learned" and head is None:
            raise ValueError(
                "PlanningCost(distance='learned') needs a world model with a goal-distance head (train one "
                "with thinkjepa.train.distance.DistanceModule); this world model has none"
            )
        if head is not None and self.distance != "latent":
            return ActionsToGo(head, self.latent_weight, self.quantile), 1.0
        return "l2", 1e-3

    def rollout(self, rollout: RolloutFn) -> RolloutFn:
        """``rollout`` at this cost's precision (float32 latents out either way)."""
        if self.rollout_precision == "32":
            return rollout

        def in_bf16(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            with torch.autocast(z0.device.type, dtype=torch.bfloat16):
                return rollout(z0, actions).float()

        return in_bf16

    def to(self, goals: torch.Tensor, metric: Metric, step_cost: float) -> GoalCost:
        """The :class:`~thinkjepa.planning.costs.GoalCost` toward ``goals (B, D)`` with a resolved metric."""
        return GoalCost(goals, weights=self.steps, metric=metric, step_cost=step_cost)


def take_rows(plan: PlanResult, rows: torch.Tensor) -> PlanResult:
    """The plans of the episodes ``rows``."""
    return replace(plan, **{f.name: getattr(plan, f.name)[rows] for f in fields(plan) if getattr(plan, f.name) is not None})


def put_rows(plan: PlanResult, rows: torch.Tensor, part: PlanResult) -> PlanResult:
    """``plan`` with the episodes ``rows`` replaced by ``part``."""
    out = {}
    for f in fields(plan):
        whole, new = getattr(plan, f.name), getattr(part, f.name)
        if whole is None or new is None:
            out[f.name] = None
            continue
        whole = whole.clone()
        whole[rows] = new
        out[f.name] = whole
    return PlanResult(**out)


class ObservedNoOps:
    """Actions an episode has *seen* leave its state unchanged, and a rollout that believes them.

    A predictor that never learned that walking into a wall (or toggling nothing) does nothing
    predicts progress for it; and an imperfect cost can make "stay" look as good as any move. Either
    way MPC picks an action that leaves the state unchanged, re-plans from the same state with the same
    information, and picks it again — until the step limit (with the tiny BabyAI world model, the
    commonest flat-planning failure). Once an executed action left an episode's latent unchanged,
    candidates that start with it from that latent are ruled out: their rollouts are NaN, which every
    planner scores as infinitely bad.

    Args:
        batch_size: Episodes in the batch.
        tol: Largest absolute latent difference that still counts as "unchanged".
    """

    def __init__(self, batch_size: int, tol: float = 1e-4) -> None:
        self.tol = tol
        self.seen: list[list[tuple[torch.Tensor, int]]] = [[] for _ in range(batch_size)]
        self.last: list[tuple[torch.Tensor, int] | None] = [None] * batch_size

    def _same(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool((a - b).abs().max() <= self.tol)

    def stood_still(self, row: int, z: torch.Tensor) -> bool:
        """Whether episode ``row``'s last executed action left its latent at ``z (D,)``."""
        last = self.last[row]
        return last is not None and self._same(last[0], z)

    def observe(self, rows: torch.Tensor, z: torch.Tensor) -> list[bool]:
        """New latents ``z (R, D)`` of episodes ``rows``: remember the last action if it changed nothing.

        Returns:
            For each of ``rows``, whether its last action changed nothing.
        """
        unchanged = []
        for i, r in enumerate(rows.tolist()):
            unchanged.append(self.stood_still(r, z[i]))
            if unchanged[-1]:
                self.seen[r].append(self.last[r])
        return unchanged

    def executed(self, rows: torch.Tensor, z: torch.Tensor, actions: torch.Tensor) -> None:
        """Episodes ``rows`` take ``actions (R,)`` from latents ``z (R, D)``."""
        for i, r in enumerate(rows.tolist()):
            self.last[r] = (z[i].clone(), int(actions[i]))

    def mask(self, rows: torch.Tensor, z: torch.Tensor, num_actions: int) -> torch.Tensor:
        """``bool (R, K)``: which actions are known no-ops from each episode's current latent."""
        out = torch.zeros(len(rows), num_actions, dtype=torch.bool, device=z.device)
        for i, r in enumerate(rows.tolist()):
            for state, action in self.seen[r]:
                if self._same(state, z[i]):
                    out[i, action] = True
        return out

    @staticmethod
    def rollout(base, noop: torch.Tensor):
        """``base`` rollout in which candidates whose first action is a known no-op of their episode
        are NaN (candidates are rows ``episode * N + n``)."""
        if not noop.any():
            return base

        def rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            preds = base(z0, actions)
            if actions.dtype != torch.long or z0.ndim != 2 or len(z0) % len(noop):
                return preds
            episode = torch.arange(len(z0), device=z0.device) // (len(z0) // len(noop))
            hit = noop[episode, actions[:, 0]]
            if not hit.any():
                return preds
            preds = preds.clone()
            preds[hit] = float("nan")
            return preds

        return rollout


def guided_rollout(world_model: WorldModel, guidance: torch.Tensor) -> RolloutFn:
    """``world_model.rollout`` of a planner's candidates, ``M = R·N`` rows grouped by episode as the planners lay
    them out, each rollout guided by its episode's row of ``guidance (R, C)``."""

    def rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if z0.shape[0] % guidance.shape[0]:
            raise ValueError(f"{z0.shape[0]} candidate rollouts do not split into {guidance.shape[0]} episodes")
        per_episode = guidance.repeat_interleave(z0.shape[0] // guidance.shape[0], dim=0)
        return world_model.rollout(z0, actions, guidance=per_episode)  # type: ignore[call-arg]

    return rollout


class LatentMPC:
    """Plan H steps toward a goal latent with a world model, execute the first ``commit``, re-plan.

    Re-planning after every action lets an imperfect model and cost undo their own last step: from A the
    best plan starts with "left", from the state it leads to the best plan starts with "right", and the
    agent turns back and forth for the rest of the episode. With ``commit > 1`` an episode executes the
    first ``commit`` actions of each plan before it plans again, unless its goal changes (:meth:`drop`) or
    an executed action is seen to change nothing (then it re-plans at once).

    Args:
        world_model: Supplies ``encode``, ``target_encode`` and ``rollout``.
        planner: Any :class:`~thinkjepa.planning.base.Planner`.
        space: The action space searched (e.g. BabyAI navigation actions).
        cost: What to minimise (:class:`PlanningCost`; default: the world model's goal-distance head
            when it has one, plus latent L2, at the closest approach).
        seed: Seed of the planner's generator (reproducible episodes).
        commit: Actions of each plan executed before the next plan (1: re-plan after every action; at
            most the planner's horizon).
    """

    def __init__(
        self,
        world_model: WorldModel,
        planner: Planner,
        space: ActionSpace,
        cost: PlanningCost | None = None,
        seed: int = 0,
        commit: int = 1,
    ) -> None:
        horizon = getattr(planner, "horizon", commit)
        if not 1 <= commit <= horizon:
            raise ValueError(f"LatentMPC.commit must be between 1 and the planner's horizon ({horizon}), got {commit}")
        self.commit = commit
        self.queued: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}  # row -> (actions left, plan cost)
        self.cost = cost or PlanningCost()
        self.metric, self.step_cost = self.cost.metric(world_model)
        check_space(world_model, space)
        self.world_model = world_model
        self.planner = planner
        self.space = space
        self.device = next(world_model.parameters()).device  # type: ignore[attr-defined]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.plans: PlanResult | None = None
        self.batch_size = 0
        self.planner_seconds = 0.0
        self.noops = ObservedNoOps(0)

    def reset(self, batch_size: int) -> None:
        """Forget all warm starts, committed actions and observed no-ops; the next episodes form a batch of
        ``batch_size``."""
        self.plans = None
        self.batch_size = batch_size
        self.noops = ObservedNoOps(batch_size)
        self.queued = {}

    def drop(self, rows) -> None:
        """Forget the committed actions of episodes ``rows`` (their goal changed): they plan at their next step."""
        for r in torch.as_tensor(rows).reshape(-1).tolist():
            self.queued.pop(int(r), None)

    def images(self, obs) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        return x if x.ndim == 4 else x.unsqueeze(0)

    @torch.no_grad()
    def act(self, z: torch.Tensor, goals: torch.Tensor, rows: torch.Tensor, guidance: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions ``(R,)`` for episodes ``rows`` and their plans' predicted costs ``(R,)``: the first action of
        a fresh plan, or the next committed action of the last one (``commit``; the cost is that plan's).

        Args:
            z: ``(R, D)`` current context latents of those episodes.
            goals: ``(R, D)`` goal latents.
            rows: ``(R,)`` episode indices within the batch (for the warm starts and observed no-ops).
            guidance: ``(R, C)`` for a guided predictor: each episode's guidance vector, held for every
                candidate rollout of its plan.
        """
        if self.commit == 1:
            plan = self.plan(z, goals, rows, guidance)
            return plan.first_action(), plan.cost
        keep = self._committed(rows, z)
        out: list[torch.Tensor | None] = [None] * len(rows)
        cost = torch.empty(len(rows), device=z.device)
        fresh = [i for i, k in enumerate(keep) if not k]
        if fresh:
            idx = torch.as_tensor(fresh, device=z.device)
            plan = self.plan(z[idx], goals[idx], rows[idx], None if guidance is None else guidance[idx])
            cost[idx] = plan.cost.to(cost.dtype)
            for j, i in enumerate(fresh):
                out[i] = plan.actions[j, 0]
                self.queued[int(rows[i])] = (list(plan.actions[j, 1 : self.commit]), plan.cost[j])
        follow = [i for i, k in enumerate(keep) if k]
        if follow:
            start = time.perf_counter()
            for i in follow:
                left, plan_cost = self.queued[int(rows[i])]
                out[i], cost[i] = left.pop(0), plan_cost
            idx = torch.as_tensor(follow, device=z.device)
            taken = torch.stack([out[i] for i in follow])
            if isinstance(self.space, DiscreteSpace):
                self.noops.executed(rows[idx], z[idx], taken)
            if self.plans is not None:  # the warm start moves along with the executed actions
                self.plans = put_rows(self.plans, rows[idx], take_rows(self.plans, rows[idx]).shifted(1))
            self.planner_seconds += time.perf_counter() - start
        return torch.stack(out), cost

    def _committed(self, rows: torch.Tensor, z: torch.Tensor) -> list[bool]:
        """Which of episodes ``rows`` take their next committed action now: some are left, and (discrete
        spaces) the last one changed the state."""
        keep = []
        for i, r in enumerate(rows.tolist()):
            left = self.queued.get(r)
            stood = isinstance(self.space, DiscreteSpace) and self.noops.stood_still(r, z[i])
            keep.append(bool(left and left[0]) and not stood)
            if not keep[-1]:
                self.queued.pop(r, None)
        return keep

    @torch.no_grad()
    def plan(self, z: torch.Tensor, goals: torch.Tensor, rows: torch.Tensor, guidance: torch.Tensor | None = None
             ) -> PlanResult:
        """Fresh plans (every planned step) for episodes ``rows``; arguments as for :meth:`act`."""
        start = time.perf_counter()
        init = take_rows(self.plans, rows) if self.plans is not None else None
        cost = self.cost.to(goals, self.metric, self.step_cost)
        rollout = self.cost.rollout(self.world_model.rollout if guidance is None
                                    else guided_rollout(self.world_model, guidance))
        if isinstance(self.space, DiscreteSpace):
            self.noops.observe(rows, z)
            rollout = ObservedNoOps.rollout(rollout, self.noops.mask(rows, z, self.space.n))
        plan = self.planner.plan(z, cost, rollout, self.space, init=init, generator=self.generator)
        if isinstance(self.space, DiscreteSpace):
            self.noops.executed(rows, z, plan.first_action())
        if self.plans is None:  # warm starts are kept once every episode of the batch has a plan
            self.plans = plan if len(rows) == self.batch_size else None
        else:
            self.plans = put_rows(self.plans, rows, plan)
        self.planner_seconds += time.perf_counter() - start
        return plan

"""``HierarchicalPolicy``: a slow thinker sets latent subgoals, a fast planner drives toward them.

Two timescales. Every step the planner re-plans (MPC) toward the current subgoal z*. The thinker is
queried only when one of these happens for an episode, and the reason is recorded:

* ``start``       — the episode has no subgoal yet;
* ``reached``     — the current latent is within ``reach_threshold`` of z*;
* ``unreachable`` — the distance to z* has not improved for ``patience`` steps;
* ``budget``      — ``requery_every`` steps have passed since the last query.

With ``follow_paths`` the subgoal source also says how to get there
(:class:`~thinkjepa.policy.subgoals.ReachableSubgoals`: the action path the world model predicts
reaches the snapped subgoal) and the policy executes that path instead of planning; the subgoal
counts as ``reached`` when the path is done (or the latent is within ``reach_threshold`` earlier).
A path action seen to change nothing (a wall, a closed door the model thought open) ends the path as
``unreachable``; the next search from there leaves that action out.

Each episode has an :class:`EpisodeTrace` (subgoal queries with their reasons, predicted and
actual distances, thinker/planner wall time) so an evaluation can say *why* an episode failed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from thinkjepa.envs.babyai import navigation_space
from thinkjepa.planning.base import Planner
from thinkjepa.planning.spaces import ActionSpace
from thinkjepa.policy.demos import calibrated_threshold
from thinkjepa.policy.mpc import LatentMPC, PlanningCost
from thinkjepa.policy.settings import AgentSettings, release_settings
from thinkjepa.policy.subgoals import OracleSubgoals, ReachableSubgoals, ThinkerSubgoals
from thinkjepa.protocols import (
    EpisodeStart,
    PathSubgoalSource,
    WorldModel,
    check_levels,
    episode_starts,
    refusal,
)
from thinkjepa.release import Release, ReleaseError
from thinkjepa.thinker.checkpoint import load_thinker
from thinkjepa.thinker.guidance import guidance_for
from thinkjepa.worldmodel.export import load_world_model


@dataclass
class EpisodeTrace:
    """What the policy did in one episode."""

    queries: list[tuple[int, str]] = field(default_factory=list)  # (step, reason)
    predicted_cost: list[float] = field(default_factory=list)  # planner's cost at each step
    distance: list[float] = field(default_factory=list)  # actual ‖z̄_t − z*‖ at each step
    subgoals: list[torch.Tensor] = field(default_factory=list)  # z* of each query, (D,) on the CPU
    thinker_seconds: float = 0.0
    steps: int = 0

    @property
    def thinker_calls(self) -> int:
        return len(self.queries)

    @property
    def unreachable_requeries(self) -> int:
        return sum(reason == "unreachable" for _, reason in self.queries)

    def to_json(self) -> dict[str, list]:
        """The per-step record, as stored with each evaluated episode (``results.json``)."""
        return {"queries": [[step, reason] for step, reason in self.queries],
                "distance": [round(x, 4) for x in self.distance],
                "predicted_cost": [round(x, 4) for x in self.predicted_cost]}


class HierarchicalPolicy:
    """Thinker subgoals + latent MPC, batched over episodes.

    Args:
        world_model: The JEPA world model.
        subgoals: A subgoal source (:class:`~thinkjepa.policy.subgoals.ThinkerSubgoals` or
            :class:`~thinkjepa.policy.subgoals.OracleSubgoals`).
        planner: The latent planner.
        space: Action space to plan over.
        reach_threshold: Latent distance under which a subgoal counts as reached. A subgoal the source proposes
            again right after it counted as reached was not: its threshold halves for as long as it is proposed so.
        patience: Steps without a better distance before the subgoal is declared unreachable.
        requery_every: Query the thinker at least this often (steps).
        cost: What the planner minimises (:class:`~thinkjepa.policy.mpc.PlanningCost`); subgoals count
            as reached by latent L2 whatever it is.
        seed: Planner seed.
        follow_paths: Execute the paths a :class:`~thinkjepa.protocols.PathSubgoalSource` returns with its
            subgoals instead of planning (the policy keeps them, ``paths``, and the actions seen blocked).
        guidance: For a world model with a guided predictor (``predictor.guidance_dim > 0``): the VLM that reads
            the frame and the instruction (:class:`~thinkjepa.thinker.guidance.VLMGuidance`) at each thinker
            query; its vector guides every planning rollout until the next query (the thinker's slow rate).
        commit: Actions of each plan executed before planning again (:class:`~thinkjepa.policy.mpc.LatentMPC`);
            a new subgoal always re-plans.
    """

    def __init__(
        self,
        world_model: WorldModel,
        subgoals,
        planner: Planner,
        space: ActionSpace,
        reach_threshold: float = 1.0,
        patience: int = 4,
        requery_every: int = 8,
        cost: PlanningCost | None = None,
        seed: int = 0,
        follow_paths: bool = False,
        guidance=None,
        commit: int = 1,
    ) -> None:
        guided = getattr(getattr(world_model, "predictor", None), "config", None)
        guided = getattr(guided, "guidance_dim", 0)
        if guidance is not None and guidance.dim != guided:
            raise ValueError(f"the guidance gives {guidance.dim}-D vectors but the world model's predictor takes "
                             f"{guided or 'no guidance'}{'-D ones' if guided else ''}")
        self.guidance = guidance
        if follow_paths and not isinstance(subgoals, PathSubgoalSource):
            raise ValueError(f"follow_paths needs a subgoal source that gives paths (ReachableSubgoals), got "
                             f"{type(subgoals).__name__}")
        self.follow_paths = follow_paths
        self.world_model = world_model
        self.subgoals = subgoals
        self.mpc = LatentMPC(world_model, planner, space, cost, seed, commit)
        self.reach_threshold, self.patience, self.requery_every = reach_threshold, patience, requery_every
        self.traces: list[EpisodeTrace] = []
        self._single = False
        self.built_for: str | None = None  # a released agent's level: episodes on another grid are refused

    @classmethod
    def from_settings(
        cls,
        world_model: WorldModel,
        settings: AgentSettings,
        thinker=None,
        oracle: bool = False,
        space: ActionSpace | None = None,
        seed: int = 0,
        planner: Planner | None = None,
        guidance=None,
    ) -> HierarchicalPolicy:
        """The agent ``settings`` describe, driven by ``thinker`` (or, with ``oracle``, by true waypoints).

        Args:
            world_model: The world model it plans with.
            settings: Planner, cost, reach threshold (required), snapping, patience, query budget.
            thinker: The thinker that proposes subgoals (not with ``oracle``).
            oracle: Subgoals from the simulator's true state (:class:`OracleSubgoals`; ``reset`` needs
                the environments).
            space: The action space (default: BabyAI navigation).
            seed: The planner's seed.
            planner: A planner to use instead of building ``settings.planner``.
            guidance: The VLM guiding a guided predictor's rollouts (see the class).
        """
        if settings.reach_threshold is None:
            raise ValueError("the agent's settings have no reach_threshold: calibrate one "
                             "(thinkjepa.policy.demos.calibrate_reach_threshold) or pass it")
        space = space or navigation_space()
        if oracle:
            subgoals = OracleSubgoals(world_model, settings.oracle_gap)
        elif thinker is None:
            raise ValueError("a hierarchical agent needs a thinker (or oracle=True)")
        else:
            subgoals = ThinkerSubgoals(thinker)
        snap = not oracle and settings.snap_depth > 0
        if snap:
            metric = settings.planning_cost().metric(world_model)[0] if settings.snap_metric == "cost" else None
            subgoals = ReachableSubgoals(subgoals, world_model, space, settings.snap_depth,
                                         merge=settings.reach_threshold, tabu=settings.snap_tabu,
                                         metric=None if metric == "l2" else metric, max_gap=settings.snap_max_gap)
        return cls(world_model, subgoals, planner or settings.make_planner(), space,
                   reach_threshold=settings.reach_threshold, patience=settings.patience,
                   requery_every=settings.requery_every, cost=settings.planning_cost(), seed=seed,
                   follow_paths=snap and settings.follow_paths, guidance=guidance, commit=settings.commit)

    @classmethod
    def from_release(cls, name: str | Path, device: str = "cpu", root: str | Path | None = None,
                     **overrides) -> HierarchicalPolicy:
        """A released agent by name (``checkpoints/release/<name>``), acting as its numbers were measured.

        The manifest's hashes are checked first: a missing, altered or unlisted file is an error naming
        it. The planner, cost, snapping, reach threshold and patience are the release's
        (:class:`~thinkjepa.policy.settings.AgentSettings`); ``overrides`` replace single settings
        (an ablation, not the released agent).

            policy = HierarchicalPolicy.from_release("babyai-goto")
            policy.reset("go to the red ball"); action = policy.act(frame)

        Raises:
            thinkjepa.release.ReleaseError: no such release, an unfinished one, or files that do not match.
        """
        release = Release.open(name, root=root)
        if release.thinker_path is None:
            raise ReleaseError(f"release {release.name!r} ships no thinker: load it with FlatPolicy.from_release")
        settings = release_settings(release, overrides)
        wm = load_world_model(release.world_model_path, device=device)
        thinker = load_thinker(release.thinker_path, world_model=wm, device=device)
        agent = cls.from_settings(wm, settings, thinker=thinker)
        agent.built_for = settings.level
        return agent

    @classmethod
    def from_checkpoints(
        cls,
        world_model: str | Path,
        thinker: str | Path,
        settings: AgentSettings | None = None,
        device: str = "cpu",
        calibration_episodes: int = 20,
    ) -> HierarchicalPolicy:
        """Load one's own world model and a thinker trained against it, and check that they fit.

        Args:
            world_model: An exported world model directory or a Lightning ``.ckpt``; a guided one's VLM
                (its ``guidance.json``) is loaded with it and guides the planner's rollouts.
            thinker: A thinker checkpoint directory.
            settings: Planner, cost, snapping, patience... (default: :class:`AgentSettings` defaults,
                categorical CEM with horizon 6). Without a ``reach_threshold`` one is calibrated as
                ``thinkjepa eval`` does (half the median one-step latent distance along bot
                demonstrations) on ``calibration_episodes`` episodes of ``settings.level`` (seeds
                9,000,000+, apart from training and evaluation seeds): distances differ between levels
                (a GoTo cell is a quarter of a GoToLocal cell), so name the level the agent will act in.
            device: Where to run.
            calibration_episodes: How many episodes calibrate the reach threshold.

        Raises:
            ValueError: the thinker was trained against another world model or latent shape.
        """
        settings = settings or AgentSettings()
        wm = load_world_model(world_model, device=device)
        th = load_thinker(thinker, world_model=wm, device=device)
        if settings.reach_threshold is None:
            settings = replace(settings, reach_threshold=calibrated_threshold(wm, settings.level, calibration_episodes))
        return cls.from_settings(wm, settings, thinker=th, guidance=guidance_for(world_model, device))

    def check_starts(self, starts: Sequence[EpisodeStart]) -> None:
        """Raise ``ValueError`` for episodes this agent cannot take: another grid than a released agent's level,
        an instruction with words no mission of that level uses (unless the subgoals come from the oracle), or
        words its thinker cannot read."""
        check_levels(starts, self.built_for, instructions=getattr(self.subgoals, "name", None) != "oracle")
        check = getattr(self.subgoals, "check", None)
        if check is not None:
            check(starts)

    def refusal(self, start: EpisodeStart) -> str | None:
        """Why :meth:`reset` would refuse the episode ``start`` (``None``: the agent takes it)."""
        return refusal(self.check_starts, start)

    def reset(self, episodes: EpisodeStart | str | Sequence[EpisodeStart | str]) -> None:
        """Start one episode (an instruction, or an :class:`~thinkjepa.protocols.EpisodeStart`: ``act`` then
        takes one frame and returns one action) or a batch of them."""
        starts, self._single = episode_starts(episodes)
        self.check_starts(starts)
        b = len(starts)
        self.subgoals.reset(starts)
        self.mpc.reset(b)
        d = self.world_model.latent_dim
        self.goal = torch.zeros(b, d, device=self.mpc.device)
        self.has_goal = torch.zeros(b, dtype=torch.bool)
        self.best = torch.full((b,), float("inf"))
        self.stalled = torch.zeros(b, dtype=torch.long)
        self.since_query = torch.zeros(b, dtype=torch.long)
        self.tighten = torch.ones(b)  # factor on reach_threshold for each episode's current subgoal
        self.traces = [EpisodeTrace() for _ in range(b)]
        self.path_blocked = torch.zeros(b, dtype=torch.bool)
        self.instructions = [s.instruction or "" for s in starts]
        self.c = None if self.guidance is None else torch.zeros(b, self.guidance.dim, device=self.mpc.device)
        self.paths: dict[int, list[int]] = {}  # episode row -> actions left of the path to its subgoal
        self.blocked: dict[int, set[int]] = {}  # episode row -> actions seen to do nothing from where it is

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, active: np.ndarray | None = None) -> np.ndarray | int:
        """Actions for the active episodes (``(R,)`` int64), or one int after ``reset(str)``."""
        images = self.mpc.images(obs)
        b = len(self.traces)
        rows = torch.arange(b) if active is None else torch.as_tensor(np.flatnonzero(active))
        if len(rows) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} observations for {len(rows)} active episodes")
        z_tgt = self.world_model.target_encode(images)
        z = self.world_model.encode(images)
        dist = torch.linalg.vector_norm(z_tgt - self.goal[rows], dim=-1).cpu()
        if self.follow_paths:
            self._blocked_actions(rows, z)

        reasons = self._query_reasons(rows, dist)
        ask = [i for i, reason in enumerate(reasons) if reason]
        if ask:
            start = time.perf_counter()
            asked = [int(rows[i]) for i in ask]
            if self.follow_paths:
                new, paths = self.subgoals.propose_with_paths(asked, images[ask], [self.blocked.get(r, set()) for r in asked])
                self.paths.update(zip(asked, paths, strict=True))
            else:
                new = self.subgoals.propose(asked, images[ask])
            if self.guidance is not None:  # read at the thinker's rate, held until the next query
                self.c[asked] = self.guidance(images[ask].cpu(), [self.instructions[r] for r in asked]).to(self.c)
            per_episode = (time.perf_counter() - start) / len(ask)
            self.mpc.drop(asked)  # a new subgoal: plan toward it now, not along the plan to the last one
            for j, i in enumerate(ask):
                r = int(rows[i])
                # the source hands back the subgoal just counted as reached: it was not (the agent stands near it,
                # e.g. before a closed door), so it must now be approached closer before it counts as reached
                same = reasons[i] == "reached" and float(torch.linalg.vector_norm(new[j] - self.goal[r])) < self.reach_threshold
                self.tighten[r] = self.tighten[r] * 0.5 if same else 1.0
                self.goal[r] = new[j]
                self.has_goal[r] = True
                self.best[r], self.stalled[r], self.since_query[r] = float("inf"), 0, 0
                self.path_blocked[r] = False
                self.traces[r].queries.append((self.traces[r].steps, reasons[i]))
                self.traces[r].subgoals.append(new[j].detach().cpu())
                self.traces[r].thinker_seconds += per_episode
            dist = torch.linalg.vector_norm(z_tgt - self.goal[rows], dim=-1).cpu()

        improved = dist < self.best[rows] - 1e-6
        self.best[rows] = torch.minimum(self.best[rows], dist)
        self.stalled[rows] = torch.where(improved, 0, self.stalled[rows] + 1)
        self.since_query[rows] += 1

        if self.follow_paths:
            actions, cost = self._path_actions(rows, z, dist)
        else:
            actions, cost = self.mpc.act(z, self.goal[rows], rows.to(z.device),
                                         None if self.c is None else self.c[rows])
        for i, r in enumerate(rows.tolist()):
            trace = self.traces[r]
            trace.steps += 1
            trace.distance.append(float(dist[i]))
            trace.predicted_cost.append(float(cost[i]))
        out = actions.cpu().numpy()
        return int(out[0]) if self._single else out

    def _blocked_actions(self, rows: torch.Tensor, z: torch.Tensor) -> None:
        """Actions seen to change nothing from each episode's current latent (the MPC's
        :class:`~thinkjepa.policy.mpc.ObservedNoOps`), which the source leaves out of its next search
        (``blocked``); an episode whose last step changed nothing ends its path as unreachable."""
        noops = self.mpc.noops
        unchanged = noops.observe(rows, z)
        mask = noops.mask(rows, z, self.mpc.space.n).cpu()
        for i, r in enumerate(rows.tolist()):
            self.blocked[r] = set(mask[i].nonzero()[:, 0].tolist())
            if unchanged[i]:
                self.paths[r] = []  # the last step went nowhere: the subgoal is not where the path led
                self.path_blocked[r] = True

    def _path_actions(self, rows: torch.Tensor, z: torch.Tensor, dist: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next action of each episode's path (cost: the current distance to the subgoal); planning
        for an episode whose path is empty (its source found no other reachable state)."""
        actions = torch.empty(len(rows), dtype=torch.long)
        cost = dist.clone()
        walk, plan = [], []
        for i, r in enumerate(rows.tolist()):
            path = self.paths.get(r)
            if path:
                actions[i] = path.pop(0)
                walk.append(i)
            else:
                plan.append(i)
        walk = torch.as_tensor(walk, dtype=torch.long)
        self.mpc.noops.executed(rows[walk], z[walk.to(z.device)], actions[walk])
        if plan:
            sub = torch.as_tensor(plan)
            planned, planned_cost = self.mpc.act(z[sub.to(z.device)], self.goal[rows[sub]], rows[sub].to(z.device),
                                                 None if self.c is None else self.c[rows[sub]])
            actions[sub], cost[sub] = planned.cpu(), planned_cost.cpu()
        return actions, cost

    def _query_reasons(self, rows: torch.Tensor, dist: torch.Tensor) -> list[str | None]:
        reasons: list[str | None] = []
        for i, r in enumerate(rows.tolist()):
            if not self.has_goal[r]:
                reasons.append("start")
            elif dist[i] < self.reach_threshold * self.tighten[r]:
                reasons.append("reached")
            elif self.follow_paths:  # a path ends within the source's look-ahead: no patience, no budget
                reasons.append("unreachable" if self.path_blocked[r] else None if self.paths.get(r) else "reached")
            elif self.stalled[r] >= self.patience:
                reasons.append("unreachable")
            elif self.since_query[r] >= self.requery_every:
                reasons.append("budget")
            else:
                reasons.append(None)
        return reasons

    @property
    def planner_seconds(self) -> float:
        return self.mpc.planner_seconds

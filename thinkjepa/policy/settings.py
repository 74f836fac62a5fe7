"""What an agent plans with, in one frozen record.

:class:`AgentSettings` is every setting a measured success rate depends on besides the weights: the
planner, the cost, how subgoals are snapped, when a subgoal counts as reached and when as lost. A
release stores it beside its weights, so ``HierarchicalPolicy.from_release(name)`` acts as the agent
its numbers were measured with. ``FlatPolicy.from_settings`` and ``HierarchicalPolicy.from_settings``
build agents from it, for the evaluation harness and for ``from_release`` / ``from_checkpoints`` alike.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from thinkjepa.configs import as_dataclass
from thinkjepa.planning.base import Planner
from thinkjepa.policy.mpc import PlanningCost

DEFAULT_PLANNER = {"class_path": "thinkjepa.planning.cem.CEMPlanner",
                   "init_args": {"horizon": 6, "num_samples": 128, "iterations": 6, "num_elites": 16}}


@dataclass(frozen=True)
class AgentSettings:
    """Everything besides the weights that an agent's success depends on.

    Args:
        level: The BabyAI level the settings were chosen for (the reach threshold's scale depends on it).
        planner: ``{"class_path": ..., "init_args": {...}}`` of the latent planner.
        cost: :class:`~thinkjepa.policy.mpc.PlanningCost` fields.
        reach_threshold: Latent distance under which a subgoal counts as reached.
        patience: Steps without a better distance before a subgoal counts as unreachable.
        requery_every: The thinker is asked again at least this often (steps).
        snap_depth: Snap thinker subgoals onto states the world model predicts within this many actions
            (0: plan toward the thinker's z* as it is).
        snap_tabu: With ``snap_depth``: never the same snapped state twice from the same frame.
        snap_metric: With ``snap_depth``: which reachable state stands in for the subgoal, the nearest in latent
            L2 (``"l2"``) or by the planning cost (``"cost"``: the goal-distance head's actions to go plus the
            cost's latent weight x L2, as the planner scores its rollouts).
        snap_max_gap: With ``snap_depth``: a subgoal whose stand-in would lie farther than this (latent L2) is
            kept as proposed (out of reach; ``None``: always snapped).
        follow_paths: With ``snap_depth``: execute the predicted path instead of planning.
        oracle_gap: The oracle's extra waypoint spacing (``None``: door crossings and final approach).
        max_steps: Step limit of an evaluated episode.
        commit: Actions of each plan executed before the next plan (1: re-plan after every action); a new
            subgoal, or an action seen to change nothing, re-plans at once (:class:`~thinkjepa.policy.mpc.LatentMPC`).
    """

    level: str = "BabyAI-GoToLocal-v0"
    planner: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PLANNER))
    cost: dict[str, Any] = field(default_factory=dict)
    reach_threshold: float | None = None
    patience: int = 4
    requery_every: int = 8
    snap_depth: int = 0
    snap_tabu: bool = False
    snap_metric: str = "l2"
    snap_max_gap: float | None = None
    follow_paths: bool = False
    oracle_gap: int | None = None
    max_steps: int = 128
    commit: int = 1

    def __post_init__(self) -> None:
        if self.snap_depth < 0:
            raise ValueError(f"AgentSettings.snap_depth must be >= 0, got {self.snap_depth}")
        if self.patience < 1 or self.requery_every < 1:
            raise ValueError(f"AgentSettings.patience and requery_every must be >= 1, got {self.patience} "
                             f"and {self.requery_every}")
        if self.snap_metric not in ("l2", "cost"):
            raise ValueError(f"AgentSettings.snap_metric must be 'l2' or 'cost', got {self.snap_metric!r}")
        if self.snap_max_gap is not None and (self.follow_paths or not self.snap_max_gap > 0):
            raise ValueError(f"AgentSettings.snap_max_gap must be > 0 and excludes follow_paths (a subgoal kept as "
                             f"proposed has no path), got {self.snap_max_gap} with follow_paths={self.follow_paths}")
        if self.commit < 1:
            raise ValueError(f"AgentSettings.commit must be >= 1, got {self.commit}")
        if "class_path" not in self.planner:
            raise ValueError(f"AgentSettings.planner needs a class_path, got {self.planner}")
        self.planning_cost()  # a bad cost field fails here, naming it

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> AgentSettings:
        """Settings from a dict; an unknown key is an error naming it and ``source``."""
        try:
            return as_dataclass(cls, dict(values))
        except TypeError as err:  # an unknown key, named
            raise ValueError(f"{source}: {err}; known: {sorted(f.name for f in fields(cls))}") from err

    @classmethod
    def from_eval_recipe(cls, path: str | Path, **overrides: Any) -> AgentSettings:
        """The agent an evaluation recipe (``recipes/eval/*.yaml``) describes: its ``agent`` block, with its
        first level as ``level``."""
        import yaml

        recipe = yaml.safe_load(Path(path).read_text()) or {}
        values = dict(recipe.get("agent") or {})
        if "levels" in recipe:
            values["level"] = recipe["levels"][0]
        return cls.from_dict({**values, **overrides}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def make_planner(self) -> Planner:
        module, _, name = self.planner["class_path"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"planner class_path {self.planner['class_path']!r} cannot be imported ({err})") from err
        return cls(**self.planner.get("init_args", {}))

    def planning_cost(self) -> PlanningCost:
        try:
            return PlanningCost(**self.cost)
        except TypeError as err:
            raise ValueError(f"AgentSettings.cost {self.cost} is not a PlanningCost ({err})") from err


def release_settings(release, overrides: dict[str, Any] | None = None) -> AgentSettings:
    """The settings a :class:`~thinkjepa.release.Release`'s agent was measured with (``overrides`` replace
    single ones)."""
    values = {**release.agent["settings"], **(overrides or {})}
    return AgentSettings.from_dict(values, source=str(release.path / "MANIFEST.json"))

"""Episodes in memory: what the collector produces, the writer stores and the store's ``meta`` returns.

Indices here are episode-local: frame ``t`` is the observation before action ``t``; an episode of
``T`` steps has frames ``0..T``. A segment ``[start, end)`` covers steps ``start..end-1`` and ``end``
is the frame at which it is over (its subgoal reached or replaced).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

L = TypeVar("L", bound=Hashable)


@dataclass(frozen=True)
class SubgoalSegment:
    """A maximal run of steps during which the BabyAI bot pursued one subgoal.

    Attributes:
        start: first step of the run.
        end: frame where the subgoal completed (or the bot switched to another); exclusive end.
        kind: the bot's subgoal class, e.g. ``GoNextToSubgoal``, ``OpenSubgoal``, ``ExploreSubgoal``.
        target: what it aims at, e.g. ``"red ball"``, ``"cell (3, 4)"``, ``"blue door at (7, 3)"``,
            with the bot's reason appended in brackets when it has one (``"cell (3, 4) [Explore]"``).
    """

    start: int
    end: int
    kind: str
    target: str


@dataclass(frozen=True)
class WaypointSegment:
    """A maximal run of steps sharing one full-grid waypoint label.

    Attributes:
        start: first step of the run.
        end: exclusive end of the run (the final frame ``T`` belongs to no segment).
        index: the waypoint's row in the dataset's ``waypoint_frames.npy``.
        state: the waypoint's agent state ``[x, y, dir]``.
    """

    start: int
    end: int
    index: int
    state: tuple[int, int, int]


@dataclass
class EpisodeRecord:
    """One collected episode held in memory, before the writer concatenates it into a dataset.

    Attributes:
        level: gymnasium id of the BabyAI level.
        seed: reset seed that generated the layout.
        mission: the instruction string.
        success: whether the episode ended in success.
        tile_size: pixels per grid cell in the frames.
        frames: ``uint8 (T+1, H, W, 3)`` observations.
        actions: ``int64 (T,)`` actions taken, or ``float32 (T, A)`` continuous ones.
        expert: ``bool (T,)``; False on epsilon-random steps.
        bot_subgoal_end: ``int32 (T+1,)`` episode-local frame where the step's bot subgoal completes.
        waypoint_index: ``int32 (T+1,)`` row of the step's next waypoint in ``waypoint_frames``.
        waypoint_frames: ``uint8 (M, H, W, 3)`` this episode's distinct waypoint renders.
        subgoals: bot subgoal segments.
        waypoints: waypoint segments (their ``index`` is episode-local here).
    """

    level: str
    seed: int
    mission: str
    success: bool
    tile_size: int
    frames: np.ndarray
    actions: np.ndarray
    expert: np.ndarray
    bot_subgoal_end: np.ndarray
    waypoint_index: np.ndarray
    waypoint_frames: np.ndarray
    subgoals: list[SubgoalSegment] = field(default_factory=list)
    waypoints: list[WaypointSegment] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        """Number of actions ``T``."""
        return int(self.actions.shape[0])

    @classmethod
    def from_trajectory(cls, level: str, seed: int, frames: np.ndarray, actions: np.ndarray, success: bool,
                        mission: str = "", expert: np.ndarray | None = None) -> EpisodeRecord:
        """An episode of an environment without BabyAI's labels: its one subgoal is where it ends (every
        step's subgoal completes at ``T``, the one waypoint render is the last frame)."""
        t = len(actions)
        return cls(level=level, seed=seed, mission=mission, success=success, tile_size=1, frames=frames,
                   actions=actions, expert=np.ones(t, np.bool_) if expert is None else expert,
                   bot_subgoal_end=np.full(t + 1, t, np.int32), waypoint_index=np.zeros(t + 1, np.int32),
                   waypoint_frames=frames[-1:].copy())


@dataclass(frozen=True)
class EpisodeMeta:
    """Per-episode metadata as stored in ``episodes.json``.

    Attributes:
        level: gymnasium id of the BabyAI level.
        seed: reset seed.
        mission: the instruction string.
        start: global index of the episode's first frame in the per-frame arrays.
        num_steps: number of actions ``T`` (the episode has ``T + 1`` frames).
        success: whether the episode ended in success.
        tile_size: pixels per grid cell.
        waypoint_start: global row of the episode's first waypoint frame.
        num_waypoint_frames: number of waypoint frames the episode owns.
        subgoals: bot subgoal segments (episode-local steps).
        waypoints: waypoint segments (episode-local steps, global ``index``).
    """

    level: str
    seed: int
    mission: str
    start: int
    num_steps: int
    success: bool
    tile_size: int
    waypoint_start: int
    num_waypoint_frames: int
    subgoals: tuple[SubgoalSegment, ...] = ()
    waypoints: tuple[WaypointSegment, ...] = ()

    @property
    def num_frames(self) -> int:
        """``T + 1``."""
        return self.num_steps + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodeMeta:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError`` on a malformed entry."""
        d = dict(d)
        subgoals = tuple(SubgoalSegment(**s) for s in d.pop("subgoals"))
        waypoints = tuple(WaypointSegment(**{**w, "state": tuple(w["state"])}) for w in d.pop("waypoints"))
        return cls(**d, subgoals=subgoals, waypoints=waypoints)


def label_runs(labels: Sequence[L]) -> list[tuple[int, int, L]]:
    """Maximal runs of equal consecutive labels as ``(start, end_exclusive, label)``."""
    runs: list[tuple[int, int, L]] = []
    start = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            runs.append((start, t, labels[start]))
            start = t
    return runs

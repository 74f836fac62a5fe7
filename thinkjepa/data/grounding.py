"""Language-grounding samples drawn from the level generator itself: frame, instruction, where to go.

A bot dataset pairs each layout with one mission, and a few thousand layouts are too few to learn
which words pick which object (every thinker we trained on them scored as well without the
instruction as with it). The level generator is free, though: any seed gives a new layout, the agent
can be put on any free cell, and any object of the layout can be named. Each sample here is

* ``frame``: the full-grid render with the agent at a random free state;
* ``mission``: ``"go to the <color> <type>"`` naming an object of the layout that no other object
  shares colour and type with (so the answer is unambiguous), or, with ``naming="level"``, any object
  named as the level would ("go to a red box" when there are several: the nearest one is the answer);
* ``waypoint``: the next full-grid shortest-path waypoint toward it (a door crossing or the final
  approach, :func:`~thinkjepa.data.waypoints.next_waypoint`) — the thinker's training label;
* ``target``: the named object's cell.

Optionally the waypoint is rendered too (the frame a thinker's latent target is encoded from), with
the doors the path crosses drawn open. No expert and no stored dataset are needed; the same seed
gives the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import numpy as np

from thinkjepa.data.waypoints import FREE, AgentState, cell_kinds, path_waypoints, shortest_path
from thinkjepa.envs.babyai import cell_center, make_env
from thinkjepa.envs.seeds import check_training_seeds

OBJECT_TYPES = ("ball", "box", "key")
Naming = Literal["unique", "level"]
NAMINGS: tuple[str, ...] = get_args(Naming)


def check_naming(naming: str, name: str = "naming") -> None:
    """Raise a ValueError naming the argument ``name`` unless ``naming`` is one of :data:`NAMINGS`."""
    if naming not in NAMINGS:
        raise ValueError(f"{name} must be {' or '.join(map(repr, NAMINGS))}, got {naming!r}")


@dataclass(frozen=True)
class GroundingSamples:
    """``N`` grounding samples of one level.

    Attributes:
        frames: ``uint8 (N, H, W, 3)`` current frames.
        missions: ``N`` instructions.
        waypoints: ``int64 (N, 3)`` next waypoint ``(x, y, heading)``.
        targets: ``int64 (N, 2)`` named object's cell ``(x, y)`` (the one the shortest path reaches).
        target_pixels: ``int64 (N, 2)`` the centre ``(row, col)`` of that cell in the frame.
        waypoint_pixels: ``int64 (N, 2)`` the centre ``(row, col)`` of the waypoint's cell in the frame.
        agents: ``int64 (N, 3)`` the agent's state in ``frames``.
        seeds: ``int64 (N,)`` the reset seed of each sample's layout.
        subgoal_frames: ``uint8 (N, H, W, 3)`` renders of the waypoints, or ``None``.
    """

    frames: np.ndarray
    missions: list[str]
    waypoints: np.ndarray
    targets: np.ndarray
    target_pixels: np.ndarray
    waypoint_pixels: np.ndarray
    agents: np.ndarray
    seeds: np.ndarray
    subgoal_frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.missions)

    @classmethod
    def concatenate(cls, parts: list[GroundingSamples]) -> GroundingSamples:
        """One set of samples from several, in order (``subgoal_frames`` kept only if every part has them)."""
        if not parts:
            raise ValueError("GroundingSamples.concatenate needs at least one part")
        values: dict[str, Any] = {}
        for f in fields(cls):
            column = [getattr(p, f.name) for p in parts]
            if f.name == "missions":
                values[f.name] = [m for c in column for m in c]
            else:
                values[f.name] = None if any(c is None for c in column) else np.concatenate(column)
        return cls(**values)


def object_cells(grid: Any) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Cells of every ball, box and key of a MiniGrid ``grid``, by ``(color, type)``."""
    cells: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, obj in enumerate(grid.grid):
        if obj is not None and obj.type in OBJECT_TYPES:
            cells.setdefault((obj.color, obj.type), []).append((i % grid.width, i // grid.width))
    return cells


def go_to_mission(color: str, kind: str, matches: int) -> str:
    """The GoTo mission for a ``color kind`` object, with BabyAI's article: "the" if it is the only
    ``matches == 1`` object of that colour and type, else "a" (any of them will do)."""
    if matches < 1:
        raise ValueError(f"go_to_mission: {matches} objects match '{color} {kind}', need at least one")
    return f"go to {'the' if matches == 1 else 'a'} {color} {kind}"


def _pixels(width: int, height: int, image_size: int, cells: list[Any]) -> np.ndarray:
    return np.asarray([cell_center(width, height, image_size, x, y) for x, y in cells], dtype=np.int64).reshape(-1, 2)


def grounding_samples(
    level: str,
    n: int,
    seed: int = 0,
    image_size: int = 88,
    per_layout: int = 4,
    with_subgoals: bool = False,
    naming: Naming = "unique",
) -> GroundingSamples:
    """Draw ``n`` samples from layouts ``seed, seed + 1, …`` of ``level``.

    Args:
        level: A BabyAI level with balls, boxes or keys to go to (e.g. ``BabyAI-GoToLocal-v0``).
        n: Number of samples.
        seed: Reset seed of the first layout; the same arguments give the same samples.
        image_size: Side of the renders.
        per_layout: Samples (agent state, named object) drawn per layout.
        with_subgoals: Also render each waypoint (``subgoal_frames``).
        naming: ``unique``: name an object no other shares colour and type with ("go to the red ball");
            ``level``: name a random object as BabyAI's GoTo levels do — "the" when it is unique, else
            "a", and then any matching object will do: the label is the path to the nearest one.

    Raises:
        ValueError: ``n`` or ``per_layout`` < 1, or 50 layouts in a row had no nameable object.
    """
    check_naming(naming)
    if n < 1 or per_layout < 1:
        raise ValueError(f"grounding_samples needs n >= 1 and per_layout >= 1, got {n=} {per_layout=}")
    env = make_env(level, image_size=image_size)
    rng = np.random.default_rng(seed)
    width, height = env.unwrapped.width, env.unwrapped.height
    frames, subgoals, missions, waypoints, targets, agents, seeds = [], [], [], [], [], [], []
    layout, barren = seed, 0
    try:
        while len(missions) < n:
            check_training_seeds(seed, layout - seed + 1, f"grounding samples of {level}")
            env.reset(seed=layout)
            grid = env.unwrapped.grid
            cells = object_cells(grid)
            if naming == "unique":
                cells = {k: v for k, v in cells.items() if len(v) == 1}
            kinds = cell_kinds(grid)
            free = np.argwhere(kinds == FREE)
            if not cells or not len(free):
                barren += 1
                if barren >= 50:
                    raise ValueError(f"{level}: no layout from seed {layout - 49} to {layout} has a nameable ball, box or key")
                layout += 1
                continue
            barren = 0
            # "unique": draw a name; "level": draw an object, so names come as often as the level names them
            names = sorted(cells) if naming == "unique" else sorted(k for k, v in cells.items() for _ in v)
            for _ in range(min(per_layout, n - len(missions))):
                x, y = (int(v) for v in free[rng.integers(len(free))])
                here = AgentState(x, y, int(rng.integers(4)))
                color, kind = names[rng.integers(len(names))]
                path = shortest_path(kinds, here, cells[(color, kind)])
                if path is None:  # walled off from this cell
                    continue
                wp = path_waypoints(kinds, path)[0]
                frames.append(env.render_state((x, y), here.dir))
                if with_subgoals:
                    subgoals.append(env.render_state((wp.state.x, wp.state.y), wp.state.dir, wp.open_doors))
                missions.append(go_to_mission(color, kind, len(cells[(color, kind)])))
                waypoints.append((wp.state.x, wp.state.y, wp.state.dir))
                targets.append(path[-1].front)  # the matching object the shortest path reaches
                agents.append((x, y, here.dir))
                seeds.append(layout)
            layout += 1
    finally:
        env.close()
    return GroundingSamples(
        frames=np.stack(frames),
        missions=missions,
        waypoints=np.asarray(waypoints, dtype=np.int64),
        targets=np.asarray(targets, dtype=np.int64),
        target_pixels=_pixels(width, height, image_size, targets),
        waypoint_pixels=_pixels(width, height, image_size, [w[:2] for w in waypoints]),
        agents=np.asarray(agents, dtype=np.int64),
        seeds=np.asarray(seeds, dtype=np.int64),
        subgoal_frames=np.stack(subgoals) if with_subgoals else None,
    )


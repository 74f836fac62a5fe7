"""Full-grid shortest paths to the mission's target, and the waypoints along them.

The BabyAI bot plans under partial observability and explores; our agent sees the whole grid, so its
subgoals should follow the path it *could* take. :func:`shortest_path` searches the agent's state
space ``(x, y, dir)`` with the actions left / right / forward (cost 1 each); a closed, unlocked door
ahead costs one extra step (toggle, then forward). Walls, locked doors and objects (keys, balls,
boxes) block. The goal is any state *facing* one of the target cells, which for a GoTo mission is
every object matching its description. Ties break deterministically (forward before left before
right, in search order).

Waypoints along a path (:func:`path_waypoints`) are each door crossing — the first state after the
agent leaves a door cell — then the final approach state, facing the target. A waypoint remembers
the doors the path has gone through up to it, so its frame can be rendered with them open.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from minigrid.core.constants import OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.core.grid import Grid

FREE, BLOCKED, CLOSED_DOOR, OPEN_DOOR = 0, 1, 2, 3
_PASSABLE = [OBJECT_TO_IDX[t] for t in ("empty", "floor", "goal")]  # lava is passable but fatal: blocked
_DIR_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid headings: right, down, left, up


@dataclass(frozen=True)
class AgentState:
    """A cell and a heading (0=right/+x, 1=down/+y, 2=left, 3=up)."""

    x: int
    y: int
    dir: int

    @property
    def front(self) -> tuple[int, int]:
        """The cell the agent faces."""
        dx, dy = _DIR_VEC[self.dir]
        return self.x + dx, self.y + dy


@dataclass(frozen=True)
class Waypoint:
    """A state on the shortest path and the doors the path has crossed to reach it."""

    state: AgentState
    open_doors: tuple[tuple[int, int], ...]


def cell_kinds(grid: Grid) -> np.ndarray:
    """Classify every cell for the search: ``int8 (W, H)`` of FREE/BLOCKED/CLOSED_DOOR/OPEN_DOOR."""
    return kinds_from_encoding(grid.encode())


def kinds_from_encoding(encoding: np.ndarray) -> np.ndarray:
    """:func:`cell_kinds` from a ``Grid.encode()`` array ``(W, H, 3)`` of (type, color, state)."""
    obj, state = encoding[..., 0], encoding[..., 2]
    kinds = np.where(np.isin(obj, _PASSABLE), FREE, BLOCKED).astype(np.int8)  # (W, H)
    door = obj == OBJECT_TO_IDX["door"]
    kinds[door & (state == STATE_TO_IDX["open"])] = OPEN_DOOR
    kinds[door & (state == STATE_TO_IDX["closed"])] = CLOSED_DOOR
    return kinds


def shortest_path(
    kinds: np.ndarray, start: AgentState, targets: Iterable[tuple[int, int]]
) -> list[AgentState] | None:
    """Cheapest action sequence's states from ``start`` to a state facing any of ``targets``.

    Args:
        kinds: ``(W, H)`` cell kinds from :func:`cell_kinds`.
        start: the agent's state.
        targets: ``(x, y)`` cells to end up facing.

    Returns:
        The visited states, ``start`` first and the facing state last (``[start]`` when it already
        faces a target), or ``None`` when no target can be reached.
    """
    width, height = kinds.shape
    # States are ints s = (x * height + y) * 4 + dir; plain lists beat dict-of-dataclass by ~5x here.
    flat = kinds.reshape(-1).tolist()
    goal = [False] * (width * height)
    for x, y in targets:
        goal[int(x) * height + int(y)] = True
    step = [height, 1, -height, -1]  # cell-index offset of DIR_VEC
    cost = [1 << 30] * (width * height * 4)
    parent = [-1] * (width * height * 4)
    s0 = ((start.x * height + start.y) << 2) | start.dir
    cost[s0] = 0
    heap = [(0, 0, s0)]
    order = 0
    while heap:
        c, _, s = heapq.heappop(heap)
        if c > cost[s]:
            continue
        cell, d = s >> 2, s & 3
        x, y = divmod(cell, height)
        dx, dy = _DIR_VEC[d]
        front_inside = 0 <= x + dx < width and 0 <= y + dy < height
        front = cell + step[d]
        if front_inside and goal[front]:
            path = [s]
            while parent[path[-1]] != -1:
                path.append(parent[path[-1]])
            return [AgentState(*divmod(p >> 2, height), p & 3) for p in reversed(path)]
        moves = [(((cell << 2) | ((d - 1) & 3)), 1), (((cell << 2) | ((d + 1) & 3)), 1)]
        if front_inside and flat[front] != BLOCKED:
            moves.insert(0, (((front << 2) | d), 2 if flat[front] == CLOSED_DOOR else 1))
        for nxt, step_cost in moves:
            if c + step_cost < cost[nxt]:
                cost[nxt] = c + step_cost
                parent[nxt] = s
                order += 1
                heapq.heappush(heap, (c + step_cost, order, nxt))
    return None


def path_waypoints(kinds: np.ndarray, path: Sequence[AgentState], max_gap: int | None = None) -> list[Waypoint]:
    """Door crossings along ``path``, then its final state.

    A door crossing is the first state after the path leaves a door cell (so a path starting inside
    a doorway gets one as soon as it steps out). Each waypoint lists the door cells visited so far.
    With ``max_gap``, a waypoint is also placed wherever ``max_gap`` path steps have passed since the
    previous one, so that consecutive subgoals stay within a planner's horizon.
    """
    if not path:
        raise ValueError("path_waypoints needs a non-empty path")
    if max_gap is not None and max_gap < 1:
        raise ValueError(f"max_gap must be >= 1 or None, got {max_gap}")
    waypoints: list[Waypoint] = []
    doors = [(path[0].x, path[0].y)] if kinds[path[0].x, path[0].y] in (CLOSED_DOOR, OPEN_DOOR) else []
    last = 0
    for i, (prev, state) in enumerate(zip(path[:-1], path[1:]), start=1):
        prev_cell, cell = (prev.x, prev.y), (state.x, state.y)
        if kinds[cell] in (CLOSED_DOOR, OPEN_DOOR) and cell not in doors:
            doors.append(cell)
        crossing = kinds[prev_cell] in (CLOSED_DOOR, OPEN_DOOR) and cell != prev_cell
        if crossing or (max_gap is not None and i - last >= max_gap):
            waypoints.append(Waypoint(state, tuple(doors)))
            last = i
    final = Waypoint(path[-1], tuple(doors))
    if not waypoints or waypoints[-1] != final:
        waypoints.append(final)
    return waypoints


def next_waypoint(grid: Grid, start: AgentState, targets: Iterable[tuple[int, int]]) -> Waypoint | None:
    """The first waypoint on the shortest full-grid path to a target; ``None`` if none is reachable."""
    kinds = cell_kinds(grid)
    path = shortest_path(kinds, start, targets)
    return None if path is None else path_waypoints(kinds, path)[0]

"""Every agent state of a BabyAI layout, rendered, with the exact step distance between any two.

Two consumers: the pose probe (:mod:`thinkjepa.worldmodel.probe`) asks whether a latent says where
the agent is on unseen layouts; the goal-distance head (:mod:`thinkjepa.train.distance`) learns
how many actions separate two latents, from these distances as labels. A state is ``(x, y, heading)``
on a free cell or in a doorway (drawn with that door open, the rest of the layout as reset); moves are
left, right and forward, as the environment applies them (a blocked forward — walls, objects, a closed
door — leaves the state unchanged). Distances count actions and include ``toggle``: stepping into a
closed doorway costs two (toggle, forward), as in :mod:`thinkjepa.data.waypoints`. Without doorways the
rooms of a multi-room level would be disconnected islands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from thinkjepa.data.waypoints import CLOSED_DOOR, FREE, OPEN_DOOR, AgentState, cell_kinds
from thinkjepa.envs.babyai import make_env

MOVES = 3  # left, right, forward: the ids of minigrid's Actions.left/right/forward
UNREACHABLE = 255


@dataclass(frozen=True)
class PoseFrames:
    """Renders of every agent state (free cells and doorways) of some layouts, and how they connect.

    Attributes:
        frames: ``uint8 (N, H, W, 3)``.
        poses: ``int64 (N, 3)`` agent ``(x, y, heading)`` of each frame.
        layout: ``int64 (N,)`` index of the layout (seed order) each frame belongs to.
        grid: ``(width, height)`` of the level's grid.
        next_state: ``int64 (N, 3)`` frame index reached by left / right / forward (global indices).
        distances: one ``uint8 (P_i, P_i)`` matrix per layout of the fewest actions (toggles included)
            from state ``a`` to state ``b`` (layout-local indices, :data:`UNREACHABLE` if none).
        offsets: ``int64 (L + 1,)`` first frame of each layout.
    """

    frames: np.ndarray
    poses: np.ndarray
    layout: np.ndarray
    grid: tuple[int, int]
    next_state: np.ndarray
    distances: list[np.ndarray]
    offsets: np.ndarray


def _transitions(poses: list[tuple[int, int, int]], kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Successors ``(P, MOVES)`` under the environment's left / right / forward, and the graph the
    distances are searched on (successors, action counts): the same edges, except that a forward into
    a closed doorway — a no-op for the environment — leads through it for two actions (toggle, forward)."""
    index = {p: i for i, p in enumerate(poses)}
    succ = np.empty((len(poses), MOVES), dtype=np.int64)
    cost = np.ones((len(poses), MOVES), dtype=np.int64)
    for i, (x, y, d) in enumerate(poses):
        succ[i, 0] = index[(x, y, (d - 1) % 4)]
        succ[i, 1] = index[(x, y, (d + 1) % 4)]
        front = AgentState(x, y, d).front
        succ[i, 2] = index.get((*front, d), i)  # cells that are no state (walls, objects) block
        if succ[i, 2] != i and kinds[front] == CLOSED_DOOR:
            cost[i, 2] = 2
    graph = succ.copy()
    succ[cost[:, 2] == 2, 2] = np.flatnonzero(cost[:, 2] == 2)  # the closed door stops the agent
    return succ, graph, cost


def all_pairs_steps(next_state: np.ndarray, cost: np.ndarray | None = None) -> np.ndarray:
    """Fewest actions ``uint8 (P, P)`` between any two states (:data:`UNREACHABLE` for none, or 255+).

    Args:
        next_state: ``(P, M)`` successor of each state under each move (local ids).
        cost: ``(P, M)`` actions each of those edges takes (default: one).
    """
    p, m = next_state.shape
    cost = np.ones((p, m), dtype=np.int64) if cost is None else cost
    dist = np.full((p, p), UNREACHABLE, dtype=np.int32)
    np.fill_diagonal(dist, 0)
    while True:  # Bellman-Ford by whole rows: dist[a, b] = min over moves of cost + dist[successor, b]
        relaxed = dist.copy()
        for k in range(m):
            np.minimum(relaxed, dist[next_state[:, k]] + cost[:, k, None], out=relaxed)
        np.minimum(relaxed, UNREACHABLE, out=relaxed)
        if np.array_equal(relaxed, dist):
            break
        dist = relaxed
    return dist.astype(np.uint8)


def pose_frames(level: str, seeds: list[int], image_size: int, with_distances: bool = False) -> PoseFrames:
    """Render the agent in every free cell and doorway, in every heading, of each seeded layout of ``level``.

    Args:
        level: BabyAI level id.
        seeds: One layout per reset seed.
        image_size: Side of the square renders.
        with_distances: Also compute each layout's all-pairs step distances (else ``distances`` is empty).

    Raises:
        ValueError: ``seeds`` is empty or a layout has no free cell.

    A doorway state is drawn with its door open; every other door as the layout was reset.
    """
    if not seeds:
        raise ValueError("pose_frames needs at least one seed")
    env = make_env(level, image_size=image_size)
    frames, poses, layout, nexts, distances, offsets = [], [], [], [], [], [0]
    try:
        for i, seed in enumerate(tqdm(seeds, desc=f"rendering {level} poses", unit="layout", leave=False)):
            env.reset(seed=seed)
            kinds = cell_kinds(env.unwrapped.grid)
            if not (kinds == FREE).any():
                raise ValueError(f"{level} seed {seed}: no free cell to put the agent in")
            cells = np.argwhere(np.isin(kinds, (FREE, OPEN_DOOR, CLOSED_DOOR)))  # (C, 2) x, y
            mine = [(int(x), int(y), d) for x, y in cells for d in range(4)]
            frames += [env.render_state((x, y), d, [(x, y)] if kinds[x, y] != FREE else ()) for x, y, d in mine]
            local, graph, cost = _transitions(mine, kinds)
            nexts.append(local + offsets[-1])
            if with_distances:
                distances.append(all_pairs_steps(graph, cost))
            poses += mine
            layout += [i] * len(mine)
            offsets.append(offsets[-1] + len(mine))
        grid = (env.unwrapped.width, env.unwrapped.height)
    finally:
        env.close()
    return PoseFrames(
        frames=np.stack(frames),
        poses=np.asarray(poses, dtype=np.int64),
        layout=np.asarray(layout, dtype=np.int64),
        grid=grid,
        next_state=np.concatenate(nexts),
        distances=distances,
        offsets=np.asarray(offsets, dtype=np.int64),
    )

"""Every agent state of a BabyAI layout, rendered, with the exact step distance between any two.

Two consumers: the pose probe (:mod:`thinkjepa.worldmodel.probe`) asks whether a latent says where
the agent is on unseen layouts; the goal-distance head (:mod:`thinkjepa.worldmodel.distance`) learns
how many actions separate two latents, from these distances as labels. A state is ``(x, y, heading)``
on a free cell; actions are left, right and forward (a blocked forward leaves the state unchanged);
distances come from a breadth-first search over that graph, per layout.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from thinkjepa.data.waypoints import FREE, AgentState, cell_kinds
from thinkjepa.envs.babyai import make_env

MOVES = 3  # left, right, forward: the ids of minigrid's Actions.left/right/forward
UNREACHABLE = 255


@dataclass(frozen=True)
class PoseFrames:
    """Renders of every free agent state of some layouts, and how the states connect.

    Attributes:
        frames: ``uint8 (N, H, W, 3)``.
        poses: ``int64 (N, 3)`` agent ``(x, y, heading)`` of each frame.
        layout: ``int64 (N,)`` index of the layout (seed order) each frame belongs to.
        grid: ``(width, height)`` of the level's grid.
        next_state: ``int64 (N, 3)`` frame index reached by left / right / forward (global indices).
        distances: one ``uint8 (P_i, P_i)`` matrix per layout of the fewest actions from state ``a`` to
            state ``b`` (layout-local indices, :data:`UNREACHABLE` if none).
        offsets: ``int64 (L + 1,)`` first frame of each layout.
    """

    frames: np.ndarray
    poses: np.ndarray
    layout: np.ndarray
    grid: tuple[int, int]
    next_state: np.ndarray
    distances: list[np.ndarray]
    offsets: np.ndarray


def _transitions(poses: list[tuple[int, int, int]]) -> np.ndarray:
    index = {p: i for i, p in enumerate(poses)}
    out = np.empty((len(poses), MOVES), dtype=np.int64)
    for i, (x, y, d) in enumerate(poses):
        out[i, 0] = index[(x, y, (d - 1) % 4)]
        out[i, 1] = index[(x, y, (d + 1) % 4)]
        out[i, 2] = index.get((*AgentState(x, y, d).front, d), i)  # only free cells are states: others block
    return out


def all_pairs_steps(next_state: np.ndarray) -> np.ndarray:
    """Breadth-first step counts ``uint8 (P, P)`` over a transition table ``(P, MOVES)`` (local ids)."""
    p = len(next_state)
    dist = np.full((p, p), UNREACHABLE, dtype=np.uint8)
    succ = next_state.tolist()
    for a in range(p):
        row = dist[a]
        row[a] = 0
        queue = deque([a])
        while queue:
            u = queue.popleft()
            for v in succ[u]:
                if row[v] == UNREACHABLE:
                    row[v] = min(int(row[u]) + 1, UNREACHABLE - 1)
                    queue.append(v)
    return dist


def pose_frames(level: str, seeds: list[int], image_size: int, with_distances: bool = False) -> PoseFrames:
    """Render the agent in every free cell and heading of each seeded layout of ``level``.

    Args:
        level: BabyAI level id.
        seeds: One layout per reset seed.
        image_size: Side of the square renders.
        with_distances: Also compute each layout's all-pairs step distances (else ``distances`` is empty).

    Raises:
        ValueError: ``seeds`` is empty or a layout has no free cell.
    """
    if not seeds:
        raise ValueError("pose_frames needs at least one seed")
    env = make_env(level, image_size=image_size)
    frames, poses, layout, nexts, distances, offsets = [], [], [], [], [], [0]
    try:
        for i, seed in enumerate(tqdm(seeds, desc=f"rendering {level} poses", unit="layout", leave=False)):
            env.reset(seed=seed)
            kinds = cell_kinds(env.unwrapped.grid)
            cells = np.argwhere(kinds == FREE)  # (C, 2) x, y
            if len(cells) == 0:
                raise ValueError(f"{level} seed {seed}: no free cell to put the agent in")
            mine = [(int(x), int(y), d) for x, y in cells for d in range(4)]
            frames += [env.render_state((x, y), d) for x, y, d in mine]
            local = _transitions(mine)
            nexts.append(local + offsets[-1])
            if with_distances:
                distances.append(all_pairs_steps(local))
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

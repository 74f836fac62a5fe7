"""BabyAI levels seen from above: the whole grid, agent position and heading, as one RGB image.

BabyAI's native observation is the agent's 7x7 egocentric view. Our world model and planner see the
*full* grid instead, so :func:`make_env` wraps a level in :class:`FullGridObservation`, whose
observation is the top-down render of every cell with the agent drawn as a red triangle pointing
where it faces, plus a yellow strip on the cell edge it faces (:func:`_mark_heading`), which keeps
the heading readable at the 4 px tiles of the 22x22 levels.

Image layout: each grid cell becomes a ``tile x tile`` pixel square with
``tile = image_size // max(grid_width, grid_height)``; the ``tile * width`` by ``tile * height``
render is centred in an ``image_size x image_size`` black canvas (the padding, at most
``grid_size - 1`` pixels in total per axis, is split as evenly as possible, the extra pixel going
right/bottom). Tiles smaller than :data:`MIN_TILE_SIZE` pixels blur the agent's heading away, so
such sizes raise ``ValueError``. At ``image_size=64``: GoToLocal (8x8) gets 8 px tiles,
GoToObjMazeS4 (10x10) 6 px tiles; the 22x22 multi-room levels (GoTo, GoToObjMaze) need
``image_size >= 66`` (3 px tiles) and read better at 88 (4 px).

Rendering uses MiniGrid's cached ``Grid.render_tile`` per cell (pure numpy), never pygame.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterable
from typing import Any, SupportsFloat

import gymnasium as gym
import minigrid  # noqa: F401  (importing registers the BabyAI levels with gymnasium)
import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.grid import Grid
from minigrid.core.world_object import Door

from thinkjepa.planning.spaces import DiscreteSpace

MIN_TILE_SIZE = 3
"""Smallest tile, in pixels, at which the agent's heading stays readable."""

ACTION_NAMES: tuple[str, ...] = tuple(a.name for a in Actions)
"""MiniGrid's action names by index: left, right, forward, pickup, drop, toggle, done."""

NUM_ACTIONS = len(ACTION_NAMES)

NAV_ACTIONS: tuple[int, ...] = (Actions.left, Actions.right, Actions.forward, Actions.toggle)
"""The navigation actions (left, right, forward, toggle) random exploration draws from."""


def navigation_space() -> DiscreteSpace:
    """The planners' action space on BabyAI navigation levels: MiniGrid's actions, :data:`NAV_ACTIONS` allowed."""
    return DiscreteSpace(NUM_ACTIONS, allowed=tuple(int(a) for a in NAV_ACTIONS))


def is_success(reward: SupportsFloat, terminated: bool) -> bool:
    """Whether a GoTo-style BabyAI step ended the episode successfully (positive reward at termination)."""
    return bool(terminated) and float(reward) > 0


def tile_size_for(grid_width: int, grid_height: int, image_size: int) -> int:
    """Pixels per grid cell so that the whole grid fits in ``image_size``.

    Raises:
        ValueError: if the tile would be smaller than :data:`MIN_TILE_SIZE` pixels.
    """
    tile = image_size // max(grid_width, grid_height)
    if tile < MIN_TILE_SIZE:
        need = MIN_TILE_SIZE * max(grid_width, grid_height)
        raise ValueError(
            f"image_size={image_size} gives {tile}px tiles for a {grid_width}x{grid_height} grid; "
            f"need at least {MIN_TILE_SIZE}px per cell, i.e. image_size >= {need}"
        )
    return tile


def cell_center(grid_width: int, grid_height: int, image_size: int, x: int, y: int) -> tuple[int, int]:
    """Pixel ``(row, col)`` of the centre of cell ``(x, y)`` in a :func:`render_full_grid` image."""
    tile = tile_size_for(grid_width, grid_height, image_size)
    top, left = (image_size - grid_height * tile) // 2, (image_size - grid_width * tile) // 2
    return top + y * tile + tile // 2, left + x * tile + tile // 2


def render_full_grid(
    grid: Grid,
    agent_pos: tuple[int, int],
    agent_dir: int,
    tile_size: int,
    image_size: int,
    open_doors: Iterable[tuple[int, int]] = (),
) -> np.ndarray:
    """Render ``grid`` from above with the agent at ``agent_pos`` facing ``agent_dir``.

    Args:
        grid: the MiniGrid grid (left unchanged; doors opened for the render are restored).
        agent_pos: ``(x, y)`` cell of the agent.
        agent_dir: heading, 0=right (+x), 1=down (+y), 2=left, 3=up.
        tile_size: pixels per cell (see :func:`tile_size_for`).
        image_size: side of the square output canvas.
        open_doors: ``(x, y)`` cells of doors to draw open (e.g. doors a planned path goes through).

    Returns:
        ``uint8 (image_size, image_size, 3)`` image.
    """
    doors = [grid.get(*pos) for pos in open_doors]
    closed = [d for d in doors if isinstance(d, Door) and not d.is_open]
    for door in closed:
        door.is_open = True
    h, w = grid.height * tile_size, grid.width * tile_size
    if h > image_size or w > image_size:
        raise ValueError(
            f"a {grid.width}x{grid.height} grid at {tile_size}px tiles does not fit {image_size=}"
        )
    top, left = (image_size - h) // 2, (image_size - w) // 2
    ax, ay = int(agent_pos[0]), int(agent_pos[1])
    canvas = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    # Grid.render does the same with Grid.render_tile's cache, but spends most of its time in a
    # per-cell np.array_equal(agent_pos, ...); this loop is ~3x faster.
    try:
        for j in range(grid.height):
            y0 = top + j * tile_size
            for i in range(grid.width):
                here = i == ax and j == ay
                tile = Grid.render_tile(
                    grid.get(i, j), agent_dir=int(agent_dir) if here else None, tile_size=tile_size
                )
                x0 = left + i * tile_size
                canvas[y0 : y0 + tile_size, x0 : x0 + tile_size] = tile
    finally:
        for door in closed:
            door.is_open = False
    _mark_heading(canvas, top + ay * tile_size, left + ax * tile_size, tile_size, int(agent_dir))
    return canvas


HEADING_COLOR = np.array([255, 255, 0], dtype=np.uint8)


def _mark_heading(canvas: np.ndarray, y0: int, x0: int, tile: int, direction: int) -> None:
    """Paint the agent cell's front edge yellow.

    MiniGrid's red triangle alone becomes a blob at 4 px tiles (the 22x22 GoTo grid at 88 px), where
    a turn changed only a faint edge: a world model then cannot see left/right turns. A strip of
    ``max(1, tile // 4)`` px on the side the agent faces keeps the heading unmistakable at any size.
    """
    w = max(1, tile // 4)
    if direction == 0:  # right
        canvas[y0 : y0 + tile, x0 + tile - w : x0 + tile] = HEADING_COLOR
    elif direction == 1:  # down
        canvas[y0 + tile - w : y0 + tile, x0 : x0 + tile] = HEADING_COLOR
    elif direction == 2:  # left
        canvas[y0 : y0 + tile, x0 : x0 + w] = HEADING_COLOR
    else:  # up
        canvas[y0 : y0 + w, x0 : x0 + tile] = HEADING_COLOR


class FullGridObservation(gym.Wrapper):
    """Replace a MiniGrid observation by the full top-down RGB render and put the mission in ``info``.

    Args:
        env: a MiniGrid/BabyAI environment.
        image_size: side of the square ``uint8`` observation.
        seed: seed used by the first ``reset()`` that is not given one.
    """

    def __init__(self, env: gym.Env, image_size: int = 64, seed: int | None = None) -> None:
        super().__init__(env)
        base = env.unwrapped
        self.image_size = image_size
        self.tile_size = tile_size_for(base.width, base.height, image_size)
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        self._first_seed = seed

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the level; ``info["mission"]`` holds the instruction string.

        BabyAI's generators print a line for every layout they reject ("Sampling rejected: …"); those lines
        are swallowed here, so logs and progress bars of collection and evaluation stay readable.
        """
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        with contextlib.redirect_stdout(io.StringIO()):
            _, info = self.env.reset(seed=seed, options=options)
        return self.render_state(), {**info, "mission": self.env.unwrapped.mission}

    def step(self, action: int) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the level; the observation is the full-grid render after the action."""
        _, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "mission": self.env.unwrapped.mission}
        return self.render_state(), reward, terminated, truncated, info

    def render_state(
        self,
        agent_pos: tuple[int, int] | None = None,
        agent_dir: int | None = None,
        open_doors: Iterable[tuple[int, int]] = (),
    ) -> np.ndarray:
        """Render the current grid with the agent at any state (default: where it is).

        Args:
            agent_pos: ``(x, y)`` cell; defaults to the agent's position.
            agent_dir: heading 0..3; defaults to the agent's heading.
            open_doors: door cells to draw open.

        Returns:
            ``uint8 (image_size, image_size, 3)`` image.
        """
        base = self.env.unwrapped
        pos = tuple(base.agent_pos) if agent_pos is None else tuple(agent_pos)
        direction = base.agent_dir if agent_dir is None else agent_dir
        return render_full_grid(base.grid, pos, direction, self.tile_size, self.image_size, open_doors)


@functools.cache
def grid_size(level: str) -> tuple[int, int]:
    """``(width, height)`` in cells of a BabyAI level's grid (fixed per level)."""
    if level not in gym.registry:
        raise ValueError(f"unknown level {level!r}: not a registered gymnasium id")
    env = gym.make(level)
    env.reset(seed=0)
    size = (int(env.unwrapped.width), int(env.unwrapped.height))
    env.close()
    return size


def check_level(level: str, built_for: str) -> None:
    """Refuse ``level`` for an agent built on ``built_for`` when their grids differ: a full-grid frame of another
    grid size draws every cell at another scale, frames its world model has never seen (it would fail silently).

    Raises:
        ValueError: naming both levels and their grids.
    """
    have, want = grid_size(level), grid_size(built_for)
    if have != want:
        raise ValueError(f"{level} has a {have[0]}x{have[1]} grid; this agent was built on {built_for} "
                         f"({want[0]}x{want[1]}), and its world model has never seen frames of that scale: refused "
                         f"(levels with a {want[0]}x{want[1]} grid are fine)")


MISSION_SAMPLES = 100  # seeded resets read per level for its mission words (GoTo missions use 13 words, all in the first 100)


def mission_words_of(text: str) -> list[str]:
    """The words of a mission, its commas as words of their own (``"go to a box, then ..."``)."""
    return text.replace(",", " , ").split()


@functools.cache
def mission_words(level: str, samples: int = MISSION_SAMPLES) -> frozenset[str]:
    """Every word the missions of ``level`` use, read off the missions of seeds ``0 .. samples - 1``."""
    if level not in gym.registry:
        raise ValueError(f"unknown level {level!r}: not a registered gymnasium id")
    env = gym.make(level)
    words: set[str] = set()
    with contextlib.redirect_stdout(io.StringIO()):  # some levels print when they reject a layout
        for seed in range(samples):
            obs, _ = env.reset(seed=seed)
            words.update(mission_words_of(obs["mission"]))
    env.close()
    return frozenset(words)


def check_mission(mission: str, built_for: str) -> None:
    """Refuse a mission with words that no mission of ``built_for`` uses (an agent built there never read
    them: "go to the red door" for an agent of BabyAI-GoTo, whose missions name balls, boxes and keys only).

    Raises:
        ValueError: naming the words, the mission and the level.
    """
    unknown = sorted(set(mission_words_of(mission)) - mission_words(built_for))
    if unknown:
        raise ValueError(f"{mission!r} uses {unknown}, words no mission of {built_for} uses (the level this agent "
                         f"was built on; its missions use {sorted(mission_words(built_for))}): refused")


def make_env(
    level: str, image_size: int = 64, seed: int | None = None, max_steps: int | None = None
) -> FullGridObservation:
    """Make a BabyAI level whose observation is the full top-down RGB render of the grid.

    Args:
        level: gymnasium id, e.g. ``"BabyAI-GoToLocal-v0"``, ``"BabyAI-GoTo-v0"``.
        image_size: side of the square ``uint8 (image_size, image_size, 3)`` observation.
        seed: seed for the first ``reset()`` called without one.
        max_steps: episode step limit; ``None`` keeps the level's own (size-dependent) limit.

    Returns:
        The wrapped environment; ``env.unwrapped`` is the MiniGrid level.

    Raises:
        ValueError: if ``level`` is not a registered BabyAI/MiniGrid level, or ``image_size`` is too
            small for :data:`MIN_TILE_SIZE`-pixel tiles.
    """
    if level not in gym.registry:
        raise ValueError(f"unknown level {level!r}; expected a registered id such as 'BabyAI-GoToLocal-v0'")
    kwargs: dict[str, Any] = {} if max_steps is None else {"max_steps": max_steps}
    env = gym.make(level, disable_env_checker=True, **kwargs)
    return FullGridObservation(env, image_size=image_size, seed=seed)

"""Full-grid shortest paths and waypoints on small hand-built grids with known answers."""

from __future__ import annotations

import pytest
from minigrid.core.grid import Grid
from minigrid.core.world_object import Ball, Door, Key, Wall

from thinkjepa.data.waypoints import (
    AgentState,
    Waypoint,
    cell_kinds,
    next_waypoint,
    path_waypoints,
    shortest_path,
)

RIGHT, DOWN, LEFT, UP = range(4)


def two_rooms(door: Door) -> Grid:
    """7x5 grid: rooms x in 1..2 and 4..5, split by a wall at x=3 with ``door`` at (3, 2).

    ``.......``     row 0: wall
    ``.A.D.B.``     the agent starts at (1, 2); a ball sits at (5, 1)
    """
    grid = Grid(7, 5)
    grid.wall_rect(0, 0, 7, 5)
    for y in (1, 3):
        grid.set(3, y, Wall())
    grid.set(3, 2, door)
    grid.set(5, 1, Ball("red"))
    return grid


def test_shortest_path_through_a_closed_door() -> None:
    kinds = cell_kinds(two_rooms(Door("blue")))
    path = shortest_path(kinds, AgentState(1, 2, RIGHT), [(5, 1)])
    # forward, (toggle+)forward into the door, forward, forward, turn left to face the ball
    assert path == [
        AgentState(1, 2, RIGHT),
        AgentState(2, 2, RIGHT),
        AgentState(3, 2, RIGHT),
        AgentState(4, 2, RIGHT),
        AgentState(5, 2, RIGHT),
        AgentState(5, 2, UP),
    ]
    assert path[-1].front == (5, 1)
    assert path_waypoints(kinds, path) == [
        Waypoint(AgentState(4, 2, RIGHT), ((3, 2),)),  # just through the door
        Waypoint(AgentState(5, 2, UP), ((3, 2),)),  # facing the ball
    ]
    # max_gap adds a waypoint every 2 path steps since the last one (door crossings still count)
    assert path_waypoints(kinds, path, max_gap=2) == [
        Waypoint(AgentState(3, 2, RIGHT), ((3, 2),)),  # 2 steps in: in the doorway
        Waypoint(AgentState(4, 2, RIGHT), ((3, 2),)),  # the crossing
        Waypoint(AgentState(5, 2, UP), ((3, 2),)),  # 2 steps after the crossing, and the end
    ]
    assert path_waypoints(kinds, path, max_gap=100) == path_waypoints(kinds, path)
    with pytest.raises(ValueError, match="max_gap must be >= 1"):
        path_waypoints(kinds, path, max_gap=0)


def test_turning_around_costs_two_steps() -> None:
    kinds = cell_kinds(two_rooms(Door("blue", is_open=True)))
    path = shortest_path(kinds, AgentState(2, 2, LEFT), [(5, 1)])
    assert path is not None and len(path) == 3 + 4  # two turns (either way), forward x3, turn left
    assert path[2] == AgentState(2, 2, RIGHT) and path[-1] == AgentState(5, 2, UP)


def test_already_facing_the_target() -> None:
    kinds = cell_kinds(two_rooms(Door("blue")))
    start = AgentState(5, 2, UP)
    assert shortest_path(kinds, start, [(5, 1)]) == [start]
    assert next_waypoint(two_rooms(Door("blue")), start, [(5, 1)]) == Waypoint(start, ())


def test_any_matching_object_counts() -> None:
    grid = two_rooms(Door("blue"))
    grid.set(1, 1, Ball("red"))  # a second red ball, two steps away in the agent's own room
    path = shortest_path(cell_kinds(grid), AgentState(1, 2, RIGHT), [(5, 1), (1, 1)])
    assert path == [AgentState(1, 2, RIGHT), AgentState(1, 2, UP)]


@pytest.mark.parametrize("blocker", ["locked_door", "key_in_front_of_door"])
def test_unreachable_target(blocker: str) -> None:
    grid = two_rooms(Door("blue", is_locked=blocker == "locked_door"))
    if blocker == "key_in_front_of_door":
        grid.set(2, 2, Key("yellow"))  # objects block; the door cell is only reachable from (2, 2)
    assert shortest_path(cell_kinds(grid), AgentState(1, 1, DOWN), [(5, 1)]) is None
    assert next_waypoint(grid, AgentState(1, 1, DOWN), [(5, 1)]) is None


def test_starting_in_a_doorway_counts_as_a_crossing() -> None:
    kinds = cell_kinds(two_rooms(Door("blue", is_open=True)))
    path = shortest_path(kinds, AgentState(3, 2, RIGHT), [(5, 1)])
    assert path_waypoints(kinds, path)[0] == Waypoint(AgentState(4, 2, RIGHT), ((3, 2),))

"""Snapping a proposed subgoal onto the states the world model can reach."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from thinkjepa.planning.spaces import BoxSpace, DiscreteSpace
from thinkjepa.policy.subgoals import ReachableSubgoals, reachable_latents


class Corridor(nn.Module):
    """Cells 0..9 of a corridor, latent = (10 * cell, noise): action 0 stays, 1 steps left, 2 steps right,
    3 is an action the space forbids (jumps 5). Each predicted step adds a little noise in the second
    coordinate, so one cell reached along two paths gives two slightly different latents."""

    latent_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls = 0

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = z0[:, -1] if z0.ndim == 3 else z0
        out = []
        for t in range(actions.shape[1]):
            move = torch.tensor([0.0, -10.0, 10.0, 50.0])[actions[:, t]]
            cell = (z[:, 0] + move).clamp(0, 90)
            z = torch.stack([cell, z[:, 1] + 0.01 * (actions[:, t] + 1)], dim=1)
            out.append(z)
        return torch.stack(out, dim=1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # an "image" here is its cell number
        return torch.stack([10 * images.reshape(len(images), -1)[:, 0].float(), torch.zeros(len(images))], dim=1)

    target_encode = encode


SPACE = DiscreteSpace(4, allowed=(0, 1, 2))


def cells(latents: torch.Tensor) -> list[int]:
    return [round(float(x) / 10) for x in latents[:, 0]]


def test_reachable_latents_are_the_distinct_states_within_depth():
    wm = Corridor()
    start = wm.encode(torch.tensor([4]))[0]
    states, paths = reachable_latents(wm, start, start, SPACE.allowed_ids, depth=3, merge=1.0)
    assert cells(states)[0] == 4 and paths[0] == ()  # the current state first
    assert sorted(cells(states)) == [1, 2, 3, 4, 5, 6, 7]  # each cell once, not 3 ** 3 paths
    assert wm.calls == 3  # one predictor call per layer
    for state, path in zip(states, paths, strict=True):  # the shortest way there, as the model predicts it
        cell = cells(state[None])[0]
        assert len(path) == abs(cell - 4) and cell == 4 + path.count(2) - path.count(1)
        if path:
            torch.testing.assert_close(state, wm.rollout(start[None], torch.tensor([path]))[0, -1])
    edge = wm.encode(torch.tensor([0]))[0]  # at the wall "left" changes nothing: merged with staying
    assert sorted(cells(reachable_latents(wm, edge, edge, SPACE.allowed_ids, depth=2, merge=1.0).latents)) == [0, 1, 2]
    # a merge radius under the model's noise keeps every path apart: the cap stops the growth
    every = reachable_latents(wm, start, start, SPACE.allowed_ids, depth=6, merge=1e-4).latents
    capped = reachable_latents(wm, start, start, SPACE.allowed_ids, depth=6, merge=1e-4, max_states=20).latents
    assert len(every) > len(capped) >= 20 > 7


def test_subgoals_snap_to_the_nearest_reachable_state_other_than_the_current_one():
    wm = Corridor()

    class Proposes:
        name = "fixed"

        def __init__(self, goals):
            self.goals = goals

        def reset(self, instructions, envs=None):
            self.reset_with = list(instructions)

        def propose(self, rows, images):
            return self.goals[list(rows)]

    goals = torch.tensor([[62.0, 0.7], [40.0, 0.0], [95.0, 0.0]])  # near cell 6; on the agent; far right
    source = Proposes(goals)
    snap = ReachableSubgoals(source, wm, SPACE, depth=2, merge=1.0)
    snap.reset(["a", "b", "c"])
    assert source.reset_with == ["a", "b", "c"] and snap.name == "fixed"
    out = snap.propose([0, 1, 2], torch.tensor([4, 4, 4]))
    assert cells(out) == [6, 3, 6]  # exactly a predicted state; not cell 4 itself; the farthest on the way
    assert out[0, 1] > 0  # the latent the world model predicts, not the proposal
    assert snap.gaps[0] == pytest.approx(float(torch.linalg.vector_norm(goals[0] - out[0])))
    assert cells(snap.propose([2], torch.tensor([4]))) == [6]


def test_tabu_proposes_the_next_nearest_state_when_asked_again_from_the_same_frame():
    wm = Corridor()
    source = Proposes(torch.tensor([[62.0, 0.0]]))
    frame4, frame5 = torch.tensor([4]), torch.tensor([5])
    plain = ReachableSubgoals(source, wm, SPACE, depth=2, merge=1.0)
    plain.reset(["a"])
    assert [cells(plain.propose([0], frame4))[0] for _ in range(3)] == [6, 6, 6]  # the same answer forever
    tabu = ReachableSubgoals(source, wm, SPACE, depth=2, merge=1.0, tabu=True)
    tabu.reset(["a"])
    assert [cells(tabu.propose([0], frame4))[0] for _ in range(3)] == [6, 5, 3]  # then the next nearest
    assert cells(tabu.propose([0], frame5)) == [6]  # another frame: nothing ruled out there
    for _ in range(5):  # every state in reach already proposed from here: the nearest again
        last = cells(tabu.propose([0], frame4))[0]
    assert last == 6
    tabu.reset(["a"])  # a new episode forgets
    assert cells(tabu.propose([0], frame4)) == [6]


def test_a_metric_ranks_reachable_states_by_what_it_measures_instead_of_latent_l2():
    """A subgoal that looks like cell 3 but lies, by the metric's count of actions to go, past cell 8
    (as a cell beyond a wall looks like the cell before it): L2 snaps next to the look-alike, the metric
    towards where the way leads."""
    wm = Corridor()
    goal = torch.tensor([[28.0, 0.0]])

    def actions_to_go(states: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        assert states.shape == goals.shape  # one goal per candidate, as the planner's cost is called
        return (8 - states[:, 0] / 10).abs()

    by_l2 = ReachableSubgoals(Proposes(goal), wm, SPACE, depth=2, merge=1.0)
    by_metric = ReachableSubgoals(Proposes(goal), wm, SPACE, depth=2, merge=1.0, metric=actions_to_go)
    for snap in (by_l2, by_metric):
        snap.reset(["a"])
    assert cells(by_l2.propose([0], torch.tensor([4]))) == [3]
    assert cells(by_metric.propose([0], torch.tensor([4]))) == [6]
    assert by_metric.gaps == [pytest.approx(2.0)]
    assert cells(by_metric.propose([0], torch.tensor([8]))) == [7]  # never the current state, even at the goal


def test_a_subgoal_out_of_reach_is_kept_as_proposed_with_max_gap():
    wm = Corridor()
    near, far = torch.tensor([[62.0, 0.7]]), torch.tensor([[95.0, 0.0]])  # in reach (cell 6); far right
    for goal, snapped in ((near, True), (far, False)):
        snap = ReachableSubgoals(Proposes(goal), wm, SPACE, depth=2, merge=1.0, max_gap=10.0)
        snap.reset(["a"])
        out = snap.propose_with_paths([0], torch.tensor([4]))
        if snapped:  # a stand-in 2 away: the predicted state, and the way there
            assert cells(out.latents) == [6] and list(out.paths[0]) == [2, 2] and out.latents[0, 1] > 0
        else:  # the nearest reachable state (cell 6) is 35 away: the proposal is planned toward as it is
            torch.testing.assert_close(out.latents, far)
            assert list(out.paths[0]) == []
    with pytest.raises(ValueError, match="max_gap > 0"):
        ReachableSubgoals(None, wm, SPACE, depth=2, merge=1.0, max_gap=0.0)


def test_reachable_subgoals_reject_what_they_cannot_enumerate():
    wm = Corridor()
    with pytest.raises(ValueError, match="needs a DiscreteSpace, got BoxSpace"):
        ReachableSubgoals(None, wm, BoxSpace(low=-1.0, high=1.0, dim=2), depth=2, merge=1.0)
    with pytest.raises(ValueError, match="depth >= 1, got 0"):
        ReachableSubgoals(None, wm, SPACE, depth=0, merge=1.0)
    start = torch.zeros(2)
    with pytest.raises(ValueError, match="merge > 0"):
        reachable_latents(wm, start, start, (0, 1), depth=1, merge=0.0)


class Proposes:
    """A subgoal source that always proposes the same latent."""

    name = "fixed"

    def __init__(self, goal: torch.Tensor) -> None:
        self.goal = goal

    def reset(self, instructions, envs=None) -> None:
        pass

    def propose(self, rows, images) -> torch.Tensor:
        return self.goal.expand(len(rows), -1)


def walk(policy, start: int, wall: int, steps: int) -> list[int]:
    """Act in the true corridor, where ``wall`` is a cell the world model does not know is a wall."""
    cell, taken = start, []
    policy.reset("go right")
    for _ in range(steps):
        action = policy.act(torch.tensor([[[[cell]]]]))
        taken.append(action)
        nxt = min(max(cell + {0: 0, 1: -1, 2: 1}[action], 0), 9)
        cell = cell if nxt == wall else nxt
    return taken


def test_following_paths_walks_to_each_snapped_subgoal_without_planning():
    from thinkjepa.planning.cem import CEMPlanner
    from thinkjepa.policy import HierarchicalPolicy

    wm = Corridor()
    source = ReachableSubgoals(Proposes(torch.tensor([[60.0, 0.0]])), wm, SPACE, depth=2, merge=1.0)
    planner = CEMPlanner(horizon=2, num_samples=8, iterations=1, num_elites=2)
    policy = HierarchicalPolicy(wm, source, planner, SPACE, reach_threshold=1e-3, follow_paths=True)
    assert walk(policy, start=2, wall=99, steps=4) == [2, 2, 2, 2]  # 2 -> 4 -> 6, two subgoals of two steps
    assert [r for _, r in policy.traces[0].queries] == ["start", "reached"]
    assert policy.planner_seconds == 0  # the paths were followed, not planned

    # a wall at 7 the model does not know: the blocked step ends the path as unreachable, and the
    # search from there leaves "right" out instead of walking into the wall again
    source = ReachableSubgoals(Proposes(torch.tensor([[90.0, 0.0]])), wm, SPACE, depth=2, merge=1.0)
    policy = HierarchicalPolicy(wm, source, planner, SPACE, reach_threshold=1e-3, follow_paths=True)
    taken = walk(policy, start=5, wall=7, steps=3)
    assert taken[:2] == [2, 2] and taken[2] != 2
    assert [r for _, r in policy.traces[0].queries] == ["start", "unreachable"]

    with pytest.raises(ValueError, match="follow_paths needs a subgoal source that gives paths"):
        HierarchicalPolicy(wm, Proposes(torch.zeros(1, 2)), planner, SPACE, follow_paths=True)


def test_flat_and_hierarchical_agents_plan_their_way_along_a_corridor_whose_dynamics_matter():
    """Unlike an untrained world model, this one's candidates cost differently: only stepping right nears the
    goal, so the planner's choice is checked, not just that it picked an allowed action."""
    from thinkjepa.planning.cem import CEMPlanner
    from thinkjepa.policy import FlatPolicy, HierarchicalPolicy
    from thinkjepa.policy.mpc import PlanningCost
    from thinkjepa.protocols import EpisodeStart

    wm = Corridor()
    cost = PlanningCost(distance="latent")

    def planner() -> CEMPlanner:
        return CEMPlanner(horizon=3, num_samples=32, iterations=3, num_elites=4)

    flat = FlatPolicy(wm, planner(), SPACE, cost=cost)
    flat.reset(EpisodeStart(goal_image=torch.tensor([[[7]]]).numpy()))
    cell, taken = 2, []
    for _ in range(6):
        action = flat.act(torch.tensor([[[[cell]]]]))
        taken.append(action)
        cell = min(max(cell + {0: 0, 1: -1, 2: 1}[action], 0), 9)
    # five steps right, then it stays (once: a step seen to change nothing is not repeated from the same state)
    assert taken == [2, 2, 2, 2, 2, 0] and cell == 7

    hierarchical = HierarchicalPolicy(wm, Proposes(torch.tensor([[40.0, 0.0]])), planner(), SPACE,
                                      reach_threshold=1.0, cost=cost)
    assert walk(hierarchical, start=8, wall=99, steps=5)[:4] == [1, 1, 1, 1]  # left, toward the subgoal at 4

"""Where a hierarchical policy's subgoals come from: the thinker, or an oracle.

A subgoal source answers ``propose(rows, images) -> z* (R, D)`` for the episodes ``rows`` of the
current batch, given their current frames.

* :class:`ThinkerSubgoals` asks the VLM thinker with the episode's instruction — the real agent.
* :class:`OracleSubgoals` renders the next full-grid shortest-path waypoint (the label the thinker
  is trained on) from the true environment state and encodes it with the world model's target
  encoder — a perfect thinker. Its success rate is the upper bound that separates thinker errors
  from world-model and planner errors.
* :class:`ReachableSubgoals` wraps either: it replaces each proposed z* by the nearest latent the
  world model predicts the agent can reach within a few actions (:func:`reachable_latents`). A
  regressed z* is never exactly a state's latent; the snapped one is, so the planner's cost is
  evaluated where it was trained and "reached" means what it says.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

import numpy as np
import torch

from thinkjepa.data.collect import WaypointFrames
from thinkjepa.planning.spaces import DiscreteSpace
from thinkjepa.protocols import EpisodeStart, Subgoals, Thinker, WorldModel


class ThinkerSubgoals:
    """Subgoals proposed by a thinker from the frame and the instruction.

    Args:
        thinker: Anything implementing the :class:`~thinkjepa.protocols.Thinker` protocol.
    """

    name = "thinker"

    def __init__(self, thinker: Thinker) -> None:
        self.thinker = thinker
        self.instructions: list[str] = []

    def check(self, episodes: Sequence[EpisodeStart]) -> None:
        """Raise ``ValueError`` for an episode without an instruction or with words the thinker cannot read."""
        missing = [i for i, e in enumerate(episodes) if not e.instruction]
        if missing:
            raise ValueError(f"a thinker reads the instruction: episodes {missing} have none")
        unknown = getattr(self.thinker, "unknown_words", None)
        for e in episodes:
            words = unknown(e.instruction) if unknown is not None else []
            if words:
                raise ValueError(f"the thinker does not know the words {words} of {e.instruction!r} (its tokenizer "
                                 "would read each as unknown): this agent cannot follow that instruction")

    def reset(self, episodes: Sequence[EpisodeStart]) -> None:
        self.check(episodes)
        self.instructions = [e.instruction for e in episodes]

    @torch.no_grad()
    def propose(self, rows: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        return self.thinker.propose(images, [self.instructions[r] for r in rows])


class OracleSubgoals:
    """The next full-grid waypoint of each episode's true state, encoded by the world model.

    Args:
        world_model: Encodes the rendered waypoint frames (target encoder).
        max_gap: Also place a waypoint every ``max_gap`` shortest-path steps (``None``: door crossings
            and the final approach only, the thinker's training label).
    """

    name = "oracle"

    def __init__(self, world_model: WorldModel, max_gap: int | None = None) -> None:
        self.world_model = world_model
        self.max_gap = max_gap
        self.envs: list = []

    def attach(self, envs: Sequence) -> None:
        """The simulators of the next batch of episodes, whose true state the waypoints come from (the
        evaluation harness attaches them; no agent API carries them)."""
        self.envs = list(envs)

    def reset(self, episodes: Sequence[EpisodeStart]) -> None:
        if len(self.envs) != len(episodes):
            raise ValueError(f"OracleSubgoals has {len(self.envs)} environments attached for {len(episodes)} episodes: "
                             "attach(envs) before reset")

    @torch.no_grad()
    def propose(self, rows: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        frames = []
        for r in rows:
            labeler = WaypointFrames(self.envs[r], self.max_gap)
            frames.append(labeler.frames[labeler.label()])
        return self.world_model.target_encode(torch.as_tensor(np.stack(frames), device=images.device))


def _distinct(latents: torch.Tensor, merge: float) -> torch.Tensor:
    """Indices of a greedy subset of ``latents (N, D)`` no two of which lie within ``merge`` (L2)."""
    close = torch.cdist(latents, latents) <= merge
    taken = torch.zeros(len(latents), dtype=torch.bool, device=latents.device)
    keep = []
    for i in range(len(latents)):
        if not taken[i]:
            keep.append(i)
            taken |= close[i]
    return torch.tensor(keep, dtype=torch.long, device=latents.device)


class ReachableStates(NamedTuple):
    """States found by :func:`reachable_latents`: their latents and how to get there."""

    latents: torch.Tensor  # (M, D) target-space latents, the current state first
    paths: list[tuple[int, ...]]  # the action ids that reach each (the current state: ())


@torch.no_grad()
def reachable_latents(
    world_model: WorldModel,
    start: torch.Tensor,
    start_target: torch.Tensor,
    actions: Sequence[int],
    depth: int,
    merge: float,
    max_states: int = 4096,
    blocked: Sequence[int] = (),
) -> ReachableStates:
    """The distinct latents the world model predicts within ``depth`` actions of one state.

    Breadth-first: every action from every state of the last layer, one predictor step each; a
    predicted latent within ``merge`` of one already found is the same state reached another way
    (turning left then right, toggling a wall) and is dropped, so the layers stay as small as the
    set of poses within reach instead of growing as ``len(actions) ** depth``.

    Args:
        world_model: Supplies ``rollout`` (a one-latent history is enough; longer ones are padded).
        start: ``(D,)`` the current context latent (what rollouts start from).
        start_target: ``(D,)`` the current target latent (layer 0 of the result).
        actions: The action ids expanded at each layer.
        depth: Layers of actions.
        merge: L2 under which two latents count as the same state.
        max_states: Stop expanding once this many states are found (a ``merge`` too small for the
            model's prediction noise would otherwise grow the layers exponentially).
        blocked: Actions not taken from the start state (seen to change nothing there).

    Returns:
        :class:`ReachableStates`: ``(M, D)`` target-space latents, ``M >= 1``, the current state
        first, and the action path the world model predicts reaches each.
    """
    if depth < 0 or merge <= 0:
        raise ValueError(f"reachable_latents needs depth >= 0 and merge > 0, got depth={depth}, merge={merge}")
    found = [start_target[None]]
    paths: list[tuple[int, ...]] = [()]
    frontier, frontier_paths = start[None], paths
    ids = torch.as_tensor(list(actions), dtype=torch.long, device=start.device)
    for layer in range(depth):
        n = len(frontier)
        nxt = world_model.rollout(frontier.repeat_interleave(len(ids), 0), ids.repeat(n)[:, None])[:, -1]
        new = torch.cdist(nxt, torch.cat(found)).min(1).values > merge
        if layer == 0 and blocked:
            new &= ~torch.isin(ids, torch.as_tensor(list(blocked), dtype=torch.long, device=ids.device))
        keep = new.nonzero()[:, 0]
        if not len(keep):
            break
        keep = keep[_distinct(nxt[keep], merge)]
        frontier = nxt[keep]
        frontier_paths = [frontier_paths[j // len(ids)] + (int(ids[j % len(ids)]),) for j in keep.tolist()]
        found.append(frontier)
        paths = paths + frontier_paths
        if len(paths) >= max_states:
            break
    return ReachableStates(torch.cat(found), paths)


class ReachableSubgoals:
    """Another source's subgoals, each moved to the nearest latent the world model can reach.

    For each proposal, :func:`reachable_latents` from the episode's current frame, then the one
    nearest (L2) the proposed z*, other than the current state (a subgoal the agent already stands on
    would be "reached" at once, every step, with the thinker seeing the same frame). A subgoal farther
    than ``depth`` actions becomes the reachable state nearest to it, a waypoint on the way, and is
    re-proposed once that is reached.

    A thinker asked again from the same frame answers the same; with ``tabu`` a state already proposed
    from (within ``merge`` of) this frame in this episode is not proposed from it again — the next
    nearest is — unless every reachable state was.

    Args:
        source: The subgoal source wrapped (:class:`ThinkerSubgoals`, :class:`OracleSubgoals`).
        world_model: The world model the planner uses.
        space: The planner's discrete action space (its allowed ids are expanded).
        depth: Actions of look-ahead.
        merge: L2 under which two predicted latents are one state (e.g. the reach threshold).
        tabu: Do not propose a state twice from the same frame of an episode.
        metric: How "nearest" is measured: ``None`` for latent L2, or a callable ``metric(states, goals) -> (M,)``
            such as the planner's learned cost (:class:`~thinkjepa.policy.mpc.ActionsToGo`), which ranks a
            state beside a subgoal beyond a wall by the actions still to go rather than by how alike the two
            frames look.
        max_gap: Keep a proposal as it is when the state that would replace it lies farther than this (latent
            L2): a subgoal out of reach has no stand-in among the reachable states, and the nearest of them is
            often on no way to it (``None``: always replace).
    """

    def __init__(self, source, world_model: WorldModel, space: DiscreteSpace, depth: int, merge: float,
                 tabu: bool = False, metric=None, max_gap: float | None = None) -> None:
        if not isinstance(space, DiscreteSpace):
            raise ValueError(f"ReachableSubgoals enumerates actions: it needs a DiscreteSpace, got {type(space).__name__}")
        if depth < 1:
            raise ValueError(f"ReachableSubgoals needs depth >= 1, got {depth}")
        self.source, self.world_model, self.space, self.depth, self.merge = source, world_model, space, depth, merge
        self.metric = metric
        if max_gap is not None and not max_gap > 0:
            raise ValueError(f"ReachableSubgoals needs max_gap > 0 (or None), got {max_gap}")
        self.max_gap = max_gap
        self.tabu = tabu
        self.proposed: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # row -> (frame, subgoal) pairs
        self.name = source.name
        self.gaps: list[float] = []  # ‖z* − snapped‖ of every proposal, for diagnostics

    def check(self, episodes: Sequence[EpisodeStart]) -> None:
        """The wrapped source's check of the episodes (``ValueError`` for one it cannot serve), if it has one."""
        check = getattr(self.source, "check", None)
        if check is not None:
            check(episodes)

    def reset(self, episodes: Sequence[EpisodeStart]) -> None:
        self.source.reset(episodes)
        self.proposed = {}

    def propose(self, rows: Sequence[int], images: torch.Tensor) -> torch.Tensor:
        return self.propose_with_paths(rows, images).latents

    @torch.no_grad()
    def propose_with_paths(self, rows: Sequence[int], images: torch.Tensor,
                           blocked: Sequence[Collection[int]] | None = None) -> Subgoals:
        """The snapped subgoals of episodes ``rows`` and the action path the world model predicts reaches each.

        Args:
            rows: The episodes asked for (rows of the batch started by ``reset``).
            images: ``uint8 (R, H, W, 3)`` their current frames.
            blocked: Per asked episode, actions seen to change nothing from where it is: searched no further.
        """
        if blocked is not None and len(blocked) != len(rows):
            raise ValueError(f"blocked has {len(blocked)} entries for {len(rows)} episodes")
        wanted = self.source.propose(rows, images)
        start, start_target = self.world_model.encode(images), self.world_model.target_encode(images)
        out = torch.empty_like(wanted)
        found: list[list[int]] = []
        for i in range(len(wanted)):
            r = int(rows[i])
            states, paths = reachable_latents(self.world_model, start[i], start_target[i], self.space.allowed_ids,
                                              self.depth, self.merge, blocked=blocked[i] if blocked is not None else ())
            if self.metric is None:
                far = torch.cdist(wanted[i : i + 1], states)[0]
            else:
                far = self.metric(states, wanted[i : i + 1].expand_as(states)).float().clone()
            if len(states) > 1:
                far[0] = float("inf")  # the next subgoal is not where the agent is
            if self.tabu:
                here = start_target[i]
                before = [g for h, g in self.proposed.get(r, []) if float(torch.linalg.vector_norm(h - here)) <= self.merge]
                if before:
                    taken = torch.cdist(states, torch.stack(before)).min(1).values <= self.merge
                    if not bool(taken[far.isfinite()].all()):
                        far = far.masked_fill(taken, float("inf"))
            k = int(far.argmin())
            if self.max_gap is not None and float(torch.linalg.vector_norm(states[k] - wanted[i])) > self.max_gap:
                out[i] = wanted[i]  # out of reach: planned toward as proposed
                found.append([])
                self.gaps.append(float("nan"))
                continue
            out[i] = states[k]
            found.append(list(paths[k]))
            self.gaps.append(float(far[k]))
            if self.tabu:
                self.proposed.setdefault(r, []).append((start_target[i].clone(), states[k].clone()))
        return Subgoals(out, found)

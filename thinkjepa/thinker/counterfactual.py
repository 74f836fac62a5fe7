"""Counterfactual instructions: the same frame, another object named, that object's subgoal.

In a bot dataset every frame comes with exactly one mission, so a thinker can fit the subgoals
without reading the instruction: the language-blind query scored as well as the real one in every
run we made. Here frames of each training episode are paired with missions naming *other*
objects of its level, and each with the next full-grid waypoint toward that object — computed by
replaying the episode from its seed and recorded actions, with the collector's shortest-path search, rendered the same way as
the recorded waypoints. One image now maps to several subgoals that only the instruction tells
apart, which a blind thinker cannot fit.

Only GoTo-style levels (balls, boxes and keys to go to) are supported; an episode whose re-simulated
frame differs from the stored one is cut there (a dataset from another version of the level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinkjepa.data.grounding import go_to_mission, object_cells
from thinkjepa.data.waypoints import AgentState, next_waypoint
from thinkjepa.envs.babyai import make_env
from thinkjepa.thinker.extended import UNGROUNDED, ExtendedDataset


@dataclass(frozen=True)
class Counterfactual:
    """One extra sample: frame ``t`` of episode ``episode``, ``mission``, and the subgoal render."""

    episode: int
    t: int
    mission: str
    subgoal: np.ndarray


def counterfactuals(
    store: Any, episodes: Sequence[int], per_episode: int = 4, every: int = 0, seed: int = 0
) -> list[Counterfactual]:
    """Up to ``per_episode`` counterfactual missions per chosen frame of each of ``episodes``.

    The chosen frames are the first one and, with ``every > 0``, every ``every``-th after it; the
    episode is replayed from its seed with its recorded actions to reach them.
    """
    rng = np.random.default_rng(seed)
    out: list[Counterfactual] = []
    envs: dict[str, Any] = {}
    try:
        for e in episodes:
            meta = store.meta(e)
            env = envs.get(meta.level) or envs.setdefault(meta.level, make_env(meta.level, image_size=store.image_size))
            obs, info = env.reset(seed=meta.seed)
            frames, actions = store.frames(e), store.actions(e)
            if info["mission"] != meta.mission:
                continue
            for t in range(meta.num_steps):
                if t == 0 or (every and t % every == 0):
                    if not np.array_equal(obs, frames[t]):
                        break  # the replay diverged from the recording: stop using this episode
                    out += [Counterfactual(int(e), t, m, g) for m, g in _named_others(env, meta.mission, per_episode, rng)]
                if not every:
                    break
                obs, *_ = env.step(int(actions[t]))
    finally:
        for env in envs.values():
            env.close()
    return out


def _named_others(env: Any, mission: str, limit: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Missions naming other objects than ``mission`` does, with their next waypoint renders.

    Named as BabyAI names them ("a red ball" when there are several; the waypoint then leads to the
    nearest). Before 2026-11-26 every mission said "the": the cf-full results were measured with that.
    """
    base = env.unwrapped
    cells = object_cells(base.grid)
    named = [k for k in cells if f"{k[0]} {k[1]}" not in mission]
    here = AgentState(int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir))
    out = []
    for j in rng.permutation(len(named))[:limit]:
        color, kind = named[j]
        wp = next_waypoint(base.grid, here, cells[(color, kind)])
        if wp is not None:
            mission = go_to_mission(color, kind, len(cells[(color, kind)]))  # "a" when several match
            out.append((mission, env.render_state((wp.state.x, wp.state.y), wp.state.dir, wp.open_doors)))
    return out


class WithCounterfactuals(ExtendedDataset):
    """A :class:`~thinkjepa.thinker.data.SubgoalDataset` followed by counterfactual samples.

    It has the same interface (``current_image``, ``subgoal_image``, items with ``image``,
    ``mission``, ``index``, ``episode``), so the thinker module encodes and trains on it unchanged.
    """

    def __init__(self, base: Any, extra: Sequence[Counterfactual]) -> None:
        self.extra = list(extra)
        super().__init__(base, len(self.extra))

    def extra_current(self, j: int) -> np.ndarray:
        c = self.extra[j]
        return np.array(self.store.frames(c.episode)[c.t])

    def extra_subgoal(self, j: int) -> np.ndarray:
        return self.extra[j].subgoal

    def extra_item(self, j: int) -> dict[str, Any]:
        c = self.extra[j]
        return {"image": torch.from_numpy(self.extra_current(j)), "mission": c.mission, "episode": c.episode,
                **UNGROUNDED}

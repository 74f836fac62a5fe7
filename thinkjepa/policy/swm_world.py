"""This project's agents inside stable-worldmodel: a ``World`` evaluates them like any of its own policies.

    import stable_worldmodel as swm
    world = swm.World("swm/TwoRoom-v1", num_envs=4, image_shape=(64, 64), image_resample="box")
    world.set_policy(AgentPolicy(lambda: BlockMPC(wm, low, high, protocol)))
    world.evaluate(dataset=ProtocolDataset.build("swm/TwoRoom-v1", protocol, 64), episodes_idx=range(4),
                   start_steps=[0] * 4, goal_offset=25, eval_budget=50, callables=PROTOCOL_CALLABLES)

:class:`AgentPolicy` is a ``stable_worldmodel.policy.BasePolicy``: each of the world's environments gets its own
agent (any :class:`~thinkjepa.policy.swm_protocol.GoalAgent`: the flat :class:`BlockMPC`, the doorway oracle, a
hierarchical agent), which reads the environment's ``pixels`` and ``goal`` frames and returns the actions to run
before it is asked again; the policy queues them per environment, as stable-worldmodel's ``WorldModelPolicy``
does, and hands the world one action per environment per step. A new goal frame (a reset, or the goal the world
writes in after ``reset``) resets that environment's agent.

:class:`ProtocolDataset` is the protocol's held-out expert trajectories as a stable-worldmodel dataset, so that
``World.evaluate(dataset=...)`` — the path stable-worldmodel's published table takes — starts each environment at
a trajectory's first state and sets its goal ``goal_offset`` steps further along. :func:`evaluate_in_world` runs
the whole thing and reports success with its 95 % interval, as :func:`~thinkjepa.policy.swm_eval.evaluate_swm`
does with this project's own loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from thinkjepa.envs.swm import frame, make_swm_env, place, require_swm, state_of
from thinkjepa.policy.stats import wilson_interval
from thinkjepa.policy.swm_protocol import GoalAgent, GoalEpisode, GoalProtocol, goal_episodes

require_swm()

from stable_worldmodel.data.dataset import Dataset  # noqa: E402  (needs the optional dependency)
from stable_worldmodel.policy import BasePolicy  # noqa: E402

PROTOCOL_CALLABLES: list[dict] = [
    {"method": "_set_state", "args": {"state": {"value": "state", "in_dataset": True}}},
    {"method": "_set_goal_state", "args": {"goal_state": {"value": "goal_state", "in_dataset": True}}},
]
"""What ``World.evaluate(dataset=...)`` calls on each environment after its reset: the agent is put at the
trajectory's first state and the target at its goal state (TwoRoom and PushT both have these setters)."""


class AgentPolicy(BasePolicy):
    """Goal agents of this project as one stable-worldmodel policy (see the module docstring).

    Args:
        make_agent: Builds one agent; called once per environment of the world the policy is attached to.
        pass_episode: Give each agent a :class:`GoalEpisode` built from the world's ``state`` / ``goal_state`` and
            the environment's reset seed (privileged: for oracles only; the agents under test get ``None``).
    """

    def __init__(self, make_agent: Callable[[], GoalAgent], pass_episode: bool = False) -> None:
        super().__init__()
        self.type = "thinkjepa"
        self.make_agent, self.pass_episode = make_agent, pass_episode
        self.agents: list[GoalAgent] = []
        self.queues: list[deque] = []
        self.goals: list[np.ndarray | None] = []
        self.queries = 0

    def set_env(self, env: Any) -> None:
        self.env = env
        n = int(getattr(env, "num_envs", 1))
        self.agents = [self.make_agent() for _ in range(n)]
        self.queues = [deque() for _ in range(n)]
        self.goals = [None] * n

    def _episode(self, i: int, info: dict, goal_frame: np.ndarray) -> GoalEpisode | None:
        if not self.pass_episode:
            return None
        seeds = getattr(self.env, "seeds", None)
        return GoalEpisode(seed=int(seeds[i]) if seeds is not None else 0,
                           start=np.array(info["state"][i, -1], np.float32),
                           goal=np.array(info["goal_state"][i, -1], np.float32),
                           goal_frame=goal_frame, expert_actions=np.zeros((0, 0), np.float32))

    def get_action(self, info: dict, **kwargs: Any) -> np.ndarray:
        if not self.agents:
            raise RuntimeError("AgentPolicy.get_action before set_env: attach it with World.set_policy")
        for key in ("pixels", "goal"):
            if key not in info:
                raise KeyError(f"AgentPolicy needs info[{key!r}] (frames of shape (num_envs, 1, H, W, 3)); the world "
                               f"gave {sorted(info)}. Evaluate with a goal-conditioned World and a dataset "
                               f"(ProtocolDataset) so that the goal frame is set.")
        pixels, goals = np.asarray(info["pixels"]), np.asarray(info["goal"])
        flush = info.get("_needs_flush")
        dead = np.asarray(info.get("terminated", np.zeros(len(self.agents), bool))).reshape(len(self.agents), -1)[:, -1]
        state = info.get("state")
        actions = []
        for i, agent in enumerate(self.agents):
            if flush is not None and flush[i]:
                self.queues[i].clear()
                self.goals[i] = None
            goal = goals[i, -1]
            if self.goals[i] is None or not np.array_equal(self.goals[i], goal):
                self.goals[i] = goal.copy()  # World reuses its buffers: the agent keeps this copy
                self.queues[i].clear()
                agent.reset(self.goals[i], self._episode(i, info, self.goals[i]))
            if not self.queues[i] and not dead[i]:
                here = None if state is None else np.array(state[i, -1], np.float32)  # World reuses its buffers
                self.queues[i].extend(np.asarray(agent.plan(pixels[i, -1].copy(), here), np.float32))
                self.queries += 1
            actions.append(self.queues[i].popleft() if self.queues[i] and not dead[i] else None)
        dim = next((len(a) for a in actions if a is not None), int(np.prod(self.env.single_action_space.shape)))
        return np.stack([a if a is not None else np.full(dim, np.nan, np.float32) for a in actions])


class ProtocolDataset(Dataset):
    """Expert trajectories as a stable-worldmodel dataset: columns ``pixels`` ``(T, 3, S, S)`` uint8 tensors (the
    layout its readers return), ``state`` ``(T, D)``, ``action`` ``(T, A)`` (the last row repeats) and ``episode_seed``.

    The reset seed is not called ``seed``: ``World.evaluate`` would pass a column of that name to ``reset`` as
    ``numpy.int64``, which gymnasium refuses (stable-worldmodel 0.1.1); the callables place agent and target
    instead, and TwoRoom's walls and doors do not depend on the seed."""

    def __init__(self, episodes: Sequence[dict[str, np.ndarray]]) -> None:
        if not episodes:
            raise ValueError("ProtocolDataset needs at least one episode")
        self.data = list(episodes)
        lengths = np.array([len(ep["state"]) for ep in self.data])
        super().__init__(lengths=lengths, offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]))

    @property
    def column_names(self) -> list[str]:
        return list(self.data[0])

    def _load_slice(self, ep_idx: int, start: int, end: int) -> dict:
        ep = self.data[ep_idx]
        out = {k: v[start:end] for k, v in ep.items()}
        out["pixels"] = torch.from_numpy(np.ascontiguousarray(out["pixels"]))
        return out

    @classmethod
    def build(cls, env_id: str, protocol: GoalProtocol, image_size: int,
              episodes: Sequence[GoalEpisode] | None = None) -> ProtocolDataset:
        """The protocol's episodes (:func:`goal_episodes`), each rendered at every state of its expert trajectory."""
        env = make_swm_env(env_id)
        try:
            episodes = goal_episodes(env_id, env, protocol, image_size) if episodes is None else episodes
            data = []
            for ep in episodes:
                states = [place(env_id, env, ep.seed, ep.start)]
                for action in ep.expert_actions:
                    obs, _, _, _, info = env.step(np.asarray(action, np.float32))
                    states.append(state_of(env_id, obs, info))
                states[-1] = np.asarray(ep.goal, np.float32)  # the goal as the protocol recorded it
                frames = []
                for s in states:
                    place(env_id, env, ep.seed, s, ep.goal)
                    frames.append(frame(env, image_size).transpose(2, 0, 1))
                actions = np.asarray(ep.expert_actions, np.float32)
                data.append({"pixels": np.stack(frames), "state": np.stack(states),
                             "action": np.concatenate([actions, actions[-1:]]),
                             "episode_seed": np.full(len(states), ep.seed, np.int64)})
        finally:
            env.close()
        return cls(data)


def evaluate_in_world(make_agent: Callable[[], GoalAgent], env_id: str = "swm/TwoRoom-v1",
                      protocol: GoalProtocol | None = None, image_size: int = 64, num_envs: int = 10,
                      pass_episode: bool = False, dataset: ProtocolDataset | None = None) -> dict[str, Any]:
    """The protocol's episodes run by stable-worldmodel's ``World`` with :class:`AgentPolicy` (``num_envs`` at a
    time): success with its 95 % interval, wall time, agent queries."""
    import stable_worldmodel as swm

    protocol = protocol or GoalProtocol()
    dataset = dataset or ProtocolDataset.build(env_id, protocol, image_size)
    n = len(dataset.lengths)
    successes, seconds, queries = [], 0.0, 0
    for first in range(0, n, num_envs):
        idx = list(range(first, min(n, first + num_envs)))
        world = swm.World(env_id, num_envs=len(idx), image_shape=(image_size, image_size), image_resample="box",
                          max_episode_steps=protocol.eval_budget + 1, disable_env_checker=True)
        policy = AgentPolicy(make_agent, pass_episode=pass_episode)
        world.set_policy(policy)
        start = time.perf_counter()
        result = world.evaluate(dataset=dataset, episodes_idx=idx, start_steps=[0] * len(idx),
                                goal_offset=protocol.goal_offset, eval_budget=protocol.eval_budget,
                                callables=PROTOCOL_CALLABLES)
        seconds += time.perf_counter() - start
        queries += policy.queries
        successes += [bool(s) for s in np.asarray(result["episode_successes"]).reshape(-1)]
        world.close()
    wins = sum(successes)
    lo, hi = wilson_interval(wins, n)
    return {"env": env_id, "protocol": asdict(protocol), "episodes": n, "successes": wins, "success_rate": wins / n,
            "ci95": [lo, hi], "seconds_per_episode": seconds / n, "queries_per_episode": queries / n,
            "episode_successes": successes}

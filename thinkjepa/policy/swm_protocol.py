"""Goal-reaching on stable-worldmodel environments under the protocol its published table uses.

    thinkjepa eval-swm --world_model checkpoints/wm/swm-tworoom/world_model --env_id swm/TwoRoom-v1
    (:func:`thinkjepa.policy.swm_eval.evaluate_swm`)

Each episode starts where a held-out expert trajectory starts (reset seed ``protocol.seed + i``, the expert
without noise) and its goal is the state ``goal_offset`` steps further along it; the agent sees the current
frame and the goal frame (the agent drawn at the goal) and has ``eval_budget`` environment steps. It succeeds
when the environment says so (TwoRoom: within 16 px of the goal, in its 224 px frame).

The flat agent (:class:`BlockMPC`) plans ``horizon`` action blocks of ``frameskip`` actions each with CEM
(``num_samples`` × ``iterations``, ``num_elites`` elites), executes the first ``receding_horizon`` blocks, and plans
again. Defaults: 50 episodes, goal 25 steps away, 50 steps of budget, CEM 300 × 30 with the top 30, horizon 5,
receding horizon 5, blocks of 5, seed 42. Its default cost (:data:`PLAN_END`) scores where a plan ends — the
world model's goal-distance head plus latent L2 when it has a head, latent L2 otherwise: with a receding horizon
as long as the horizon every planned block is executed, and a cost that scores the closest approach on the way
(BabyAI's, for episodes that end on reaching the goal) leaves the blocks after it to chance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from thinkjepa.envs.swm import expert_rollout, frame, make_swm_env, place, state_of, tworoom_doors
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.spaces import BoxSpace
from thinkjepa.policy.mpc import LatentMPC, PlanningCost

PLAN_END = PlanningCost(distance="auto", latent_weight=1.0, steps="final")
"""The protocol agents' default cost: the distance at the plan's end, by the goal-distance head (in blocks) plus
latent L2 where the world model has a head, latent L2 alone where it has none."""


@dataclass(frozen=True)
class GoalProtocol:
    """The evaluation protocol (see the module docstring)."""

    episodes: int = 50
    goal_offset: int = 25
    eval_budget: int = 50
    frameskip: int = 5
    horizon: int = 5
    receding_horizon: int = 5
    num_samples: int = 300
    iterations: int = 30
    num_elites: int = 30
    seed: int = 42
    other_room: bool = False
    """TwoRoom only: keep only episodes whose goal lies in the other room (the long-horizon variant; seeds are
    taken in order from ``seed`` until ``episodes`` qualify)."""

    def __post_init__(self) -> None:
        if min(self.episodes, self.goal_offset, self.eval_budget, self.frameskip, self.horizon,
               self.receding_horizon, self.num_samples, self.iterations, self.num_elites) < 1:
            raise ValueError(f"every GoalProtocol field must be >= 1, got {self}")
        if self.receding_horizon > self.horizon or self.num_elites > self.num_samples:
            raise ValueError(f"GoalProtocol needs receding_horizon <= horizon and num_elites <= num_samples, got {self}")


@dataclass
class GoalEpisode:
    """Where an episode starts, where its goal is, what the goal looks like, and the expert actions between."""

    seed: int
    start: np.ndarray
    goal: np.ndarray
    goal_frame: np.ndarray
    expert_actions: np.ndarray


class GoalAgent(Protocol):
    """What the protocol drives: ``reset`` with the goal, then ``plan`` from each frame the actions to execute
    (``(n, A)`` environment actions, n >= 1) before it is asked again. ``state`` is the simulator's agent state,
    for privileged agents (the oracle); the agents under test read only the frame."""

    def reset(self, goal_frame: np.ndarray, episode: GoalEpisode) -> None: ...

    def plan(self, frame: np.ndarray, state: np.ndarray) -> np.ndarray: ...


def goal_episodes(env_id: str, env, protocol: GoalProtocol, image_size: int) -> list[GoalEpisode]:
    """The protocol's episodes: expert rollouts of ``goal_offset`` steps from seeds ``protocol.seed`` on."""
    if protocol.other_room and env_id != "swm/TwoRoom-v1":
        raise ValueError(f"GoalProtocol.other_room is TwoRoom's long-horizon variant; {env_id} has no rooms")
    episodes, seed = [], protocol.seed
    while len(episodes) < protocol.episodes:
        run = expert_rollout(env_id, env, protocol.goal_offset, seed)
        if not protocol.other_room or room(env, run.states[0]) != room(env, run.states[-1]):
            place(env_id, env, seed, run.states[-1], run.states[-1])
            episodes.append(GoalEpisode(seed, run.states[0], run.states[-1], frame(env, image_size), run.actions))
        seed += 1
        if seed - protocol.seed > 100 * protocol.episodes:
            raise ValueError(f"{env_id}: fewer than {protocol.episodes} qualifying episodes in "
                             f"{100 * protocol.episodes} seeds (other_room={protocol.other_room})")
    return episodes


def room(env, state: np.ndarray) -> int:
    """TwoRoom: which side of the wall ``state`` is on (0 or 1)."""
    base = env.unwrapped
    axis = int(base.variation_space["wall"]["axis"].value)  # 1: a vertical wall (rooms left/right of it)
    return int(float(np.asarray(state).reshape(-1)[0 if axis == 1 else 1]) > float(base.wall_pos))


def doorway(env, state: np.ndarray) -> np.ndarray:
    """TwoRoom: the centre of the door the agent at ``state`` is nearest to, among those it fits through."""
    here = np.asarray(state, np.float32).reshape(-1)
    return min(tworoom_doors(env), key=lambda d: float(np.linalg.norm(d - here)))


class BlockMPC:
    """Flat latent MPC over action blocks (see the module docstring).

    Args:
        world_model: A world model trained on blocks of ``protocol.frameskip`` actions (``predictor.num_actions``
            = ``frameskip`` × the environment's action dimension).
        low, high: The environment's action bounds ``(A,)``.
        protocol: Planner budget, horizon, receding horizon and block length.
        cost: The planning cost (default: :data:`PLAN_END`).
    """

    def __init__(self, world_model, low: np.ndarray, high: np.ndarray, protocol: GoalProtocol,
                 cost: PlanningCost | None = None) -> None:
        k = protocol.frameskip
        space = BoxSpace(np.tile(low, k).tolist(), np.tile(high, k).tolist(), dim=k * len(low))
        planner = CEMPlanner(horizon=protocol.horizon, num_samples=protocol.num_samples,
                             iterations=protocol.iterations, num_elites=protocol.num_elites)
        self.world_model, self.protocol, self.action_dim = world_model, protocol, len(low)
        self.mpc = LatentMPC(world_model, planner, space, cost or PLAN_END, protocol.seed)
        self.goal: torch.Tensor | None = None

    @property
    def planner_seconds(self) -> float:
        return self.mpc.planner_seconds

    @torch.no_grad()
    def reset(self, goal_frame: np.ndarray, episode: GoalEpisode | None = None) -> None:
        self.mpc.reset(1)
        self.goal = self.world_model.target_encode(self.mpc.images(goal_frame))

    @torch.no_grad()
    def plan(self, frame: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        if self.goal is None:
            raise RuntimeError("BlockMPC.plan called before reset(goal_frame)")
        z = self.world_model.encode(self.mpc.images(frame))
        plan = self.mpc.plan(z, self.goal, torch.zeros(1, dtype=torch.long, device=z.device))
        blocks = plan.actions[0, : self.protocol.receding_horizon]  # (R, k * A)
        return blocks.reshape(-1, self.action_dim).float().cpu().numpy()


class DoorwayOracle(BlockMPC):
    """TwoRoom's oracle subgoals: the latent MPC of :class:`BlockMPC` driven first to the doorway between the rooms
    (rendered from the simulator), then to the goal once the agent stands within ``reach`` of the doorway (true
    state: a perfect thinker). With the goal in the agent's room it plans straight to the goal."""

    def __init__(self, world_model, low: np.ndarray, high: np.ndarray, protocol: GoalProtocol, env_id: str,
                 image_size: int, cost: PlanningCost | None = None, reach: float = 12.0) -> None:
        super().__init__(world_model, low, high, protocol, cost)
        self.env, self.env_id = make_swm_env(env_id), env_id
        self.image_size, self.reach = image_size, reach
        self.final: torch.Tensor | None = None
        self.door: np.ndarray | None = None

    @torch.no_grad()
    def reset(self, goal_frame: np.ndarray, episode: GoalEpisode | None = None) -> None:
        super().reset(goal_frame, episode)
        self.final, self.door = self.goal, None
        if episode is None:
            return
        place(self.env_id, self.env, episode.seed, episode.start, episode.goal)
        if room(self.env, episode.start) != room(self.env, episode.goal):
            self.door = doorway(self.env, episode.start)
            place(self.env_id, self.env, episode.seed, self.door, self.door)
            self.goal = self.world_model.target_encode(self.mpc.images(frame(self.env, self.image_size)))

    def plan(self, frame: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        if self.door is not None and state is not None and np.linalg.norm(np.asarray(state) - self.door) < self.reach:
            self.goal, self.door = self.final, None  # the doorway is reached: on to the goal
            self.mpc.reset(1)
        return super().plan(frame, state)


def run_protocol(env_id: str, agent: GoalAgent, protocol: GoalProtocol, image_size: int,
                 episodes: Sequence[GoalEpisode] | None = None) -> list[dict[str, Any]]:
    """Drive ``agent`` through the protocol's episodes; one record per episode (an episode that raises is a
    failure with its error recorded) with the agent's final and closest distance to the goal position (the first
    two state entries: TwoRoom's agent, PushT's pusher)."""
    env = make_swm_env(env_id)
    episodes = goal_episodes(env_id, env, protocol, image_size) if episodes is None else episodes
    records = []
    for ep in episodes:
        start, steps, success, error = time.perf_counter(), 0, False, None
        gap: list[float] = []  # the agent's distance to the goal position after each step (simulator units)
        goal_xy = np.asarray(ep.goal, np.float32).reshape(-1)[:2]
        try:
            state = place(env_id, env, ep.seed, ep.start, ep.goal)
            agent.reset(ep.goal_frame, ep)
            while steps < protocol.eval_budget and not success:
                for action in agent.plan(frame(env, image_size), state):
                    obs, _, terminated, _, info = env.step(np.asarray(action, dtype=np.float32))
                    state = state_of(env_id, obs, info)
                    gap.append(float(np.linalg.norm(state[:2] - goal_xy)))
                    steps += 1
                    if terminated:
                        success = True
                        break
                    if steps >= protocol.eval_budget:
                        break
        except Exception as err:  # noqa: BLE001  (a failing episode is recorded; the evaluation goes on)
            error = f"step {steps}: {type(err).__name__}: {err}"
        records.append({"seed": ep.seed, "success": success, "steps": steps, "seconds": time.perf_counter() - start,
                        "error": error, "final_distance": gap[-1] if gap else None,
                        "closest_distance": min(gap) if gap else None})
    env.close()
    return records

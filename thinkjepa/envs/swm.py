"""stable-worldmodel's continuous-control environments (``swm/TwoRoom-v1``, ``swm/PushT-v1``), seen as frames.

An optional extra: ``pip install -e '.[swm]'`` (``make install-swm``). stable-worldmodel registers its
environments with gymnasium on import; :func:`make_swm_env` imports it and builds one, and :func:`frame` renders
what the agent sees as a square ``uint8 (S, S, 3)`` image, the format of every frame in this project.

:func:`collect_swm` rolls an environment's own expert policy (with Gaussian action noise) and writes the
episodes to the episode store (:mod:`thinkjepa.data.episodes`) with their continuous actions. An episode runs
``steps`` steps; whenever the agent reaches its target, a new target is drawn from where it stands
(``reset(options={"state": ...})`` resamples only the target), so an episode is one long, varied trajectory,
the data a world model learns dynamics from.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from thinkjepa.data.records import EpisodeRecord
from thinkjepa.data.writer import EpisodeWriter
from thinkjepa.envs.seeds import SWM_EVAL_SEEDS, check_training_seeds

INSTALL = "pip install -e '.[swm]' (or make install-swm)"
EXPERTS = {
    "swm/TwoRoom-v1": "stable_worldmodel.envs.two_room.expert_policy:ExpertPolicy",
    "swm/PushT-v1": "stable_worldmodel.envs.pusht.expert_policy:WeakPolicy",
}
"""The expert policy of each environment :func:`collect_swm` knows."""

GOAL_OPTIONS = {"swm/TwoRoom-v1": "target_state", "swm/PushT-v1": "goal_state"}
"""The ``reset`` option that places each environment's goal (the agent's state goes in ``"state"``)."""


def require_swm() -> None:
    """Import stable-worldmodel (registering its environments), or say how to install it."""
    try:
        importlib.import_module("stable_worldmodel")
    except ImportError as err:
        raise ImportError(f"stable-worldmodel environments need the swm extra: {INSTALL} ({err})") from err


def make_swm_env(env_id: str, **kwargs) -> gym.Env:
    """``gym.make(env_id)`` of a stable-worldmodel environment, with a clear error for an unknown id.

    Raises:
        ImportError: stable-worldmodel is not installed (the message says how).
        ValueError: ``env_id`` is not registered (the message lists the ``swm/`` ids that are).
    """
    require_swm()
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("swm/"))
        raise ValueError(f"unknown environment {env_id!r}; stable-worldmodel registers {known}")
    # stable-worldmodel's environments return torch observations and share info dicts between steps, which
    # gymnasium's passive checker warns about on every reset; nothing here reads observations or keeps infos.
    return gym.make(env_id, **{"disable_env_checker": True, **kwargs})


def frame(env: gym.Env, image_size: int) -> np.ndarray:
    """The environment's current view as ``uint8 (image_size, image_size, 3)`` (area-averaged from its render)."""
    image = np.asarray(env.render())
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{env.spec.id if env.spec else env}: render() gave {image.shape}, expected (H, W, 3)")
    if image.shape[0] != image_size or image.shape[1] != image_size:
        image = np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BOX))
    return np.array(image, dtype=np.uint8, order="C")  # a writable copy (a PIL array is read-only)


def expert_policy(env_id: str, env: gym.Env, noise: float, seed: int):
    """The environment's expert (stable-worldmodel's own), attached to ``env``, with Gaussian action noise."""
    if env_id not in EXPERTS:
        raise ValueError(f"no expert policy known for {env_id!r}; known: {sorted(EXPERTS)}")
    module, _, name = EXPERTS[env_id].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if "action_noise" in cls.__init__.__code__.co_varnames:
        policy = cls(action_noise=noise, seed=seed)
    elif noise > 0:
        raise ValueError(f"{env_id}'s expert ({name}) takes no action noise (it samples its own exploratory "
                         f"actions); collect it with noise 0, got {noise}")
    else:
        policy = cls(seed=seed)
    policy.set_env(env if env_id != "swm/PushT-v1" else _OnePool(env))
    return policy


class _OnePool:
    """One environment seen as stable-worldmodel's pool of environments, for experts written for a pool
    (PushT's ``WeakPolicy`` returns ``(num_envs, A)`` actions from ``env.envs``)."""

    def __init__(self, env: gym.Env) -> None:
        self.envs, self.spec, self.unwrapped = [env], env.spec, env.unwrapped
        low, high = action_box(env)
        self.action_space = gym.spaces.Box(low[None], high[None], dtype=np.float32)


def state_of(env_id: str, obs, info: dict) -> np.ndarray:
    """The simulator's full state after a reset or step (TwoRoom: ``info["state"]``, the agent's position;
    PushT: ``obs["state"]``, agent position, block pose and agent velocity)."""
    source = info if "state" in info else obs if isinstance(obs, dict) and "state" in obs else None
    if source is None:
        raise KeyError(f"{env_id}: neither info nor the observation holds a 'state'")
    return np.array(source["state"], dtype=np.float32).reshape(-1)


def reset_at(env_id: str, env: gym.Env, seed: int, state: np.ndarray, goal: np.ndarray | None = None):
    """``env.reset`` with ``seed``, the agent at ``state`` and the goal at ``goal`` (``None``: a new goal drawn
    by the environment); returns ``(obs, info)``."""
    if env_id not in GOAL_OPTIONS:
        raise ValueError(f"no goal placement known for {env_id!r}; known: {sorted(GOAL_OPTIONS)}")
    options = {"state": np.asarray(state, np.float32)}
    if goal is not None:
        options[GOAL_OPTIONS[env_id]] = np.asarray(goal, np.float32)
    return env.reset(seed=int(seed), options=options)


def place(env_id: str, env: gym.Env, seed: int, state: np.ndarray, goal: np.ndarray | None = None) -> np.ndarray:
    """:func:`reset_at`, returning the simulator's state."""
    return state_of(env_id, *reset_at(env_id, env, seed, state, goal))


def action_box(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float32 ``(A,)`` of a continuous-action environment."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{env.spec.id if env.spec else env} has {type(space).__name__} actions; continuous (Box) "
                         "ones are expected")
    return space.low.astype(np.float32).reshape(-1), space.high.astype(np.float32).reshape(-1)


@dataclass
class ExpertRun:
    """One expert rollout: ``frames (T + 1, S, S, 3)`` (``None`` when not rendered), ``actions (T, A)``, the agent's
    ``states (T + 1, D)`` (:func:`state_of`) and how many targets it reached on the way."""

    frames: np.ndarray | None
    actions: np.ndarray
    states: np.ndarray
    targets_reached: int


def expert_rollout(env_id: str, env: gym.Env, steps: int, seed: int, noise: float = 0.0,
                   image_size: int | None = None) -> ExpertRun:
    """Reset ``env`` with ``seed`` and roll its expert ``steps`` steps, drawing a new target from where the agent
    stands each time it reaches one (walls and doors stay)."""
    low, high = action_box(env)
    obs, info = env.reset(seed=seed)
    policy = expert_policy(env_id, env, noise, seed)
    frames = [frame(env, image_size)] if image_size else None
    actions, states, reached = [], [state_of(env_id, obs, info)], 0
    for t in range(steps):
        action = np.clip(np.asarray(policy.get_action(info), dtype=np.float32).reshape(-1), low, high)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        states.append(state_of(env_id, obs, info))
        if frames is not None:
            frames.append(frame(env, image_size))
        if terminated or truncated:
            reached += int(terminated)
            obs, info = reset_at(env_id, env, seed + 1_000_003 * (t + 1), states[-1])  # a new target
    return ExpertRun(None if frames is None else np.stack(frames), np.stack(actions), np.stack(states), reached)


def tworoom_doors(env: gym.Env) -> np.ndarray:
    """``(K, 2)`` the centres of TwoRoom's doors the agent fits through (all doors if none does)."""
    base = env.unwrapped
    space = base.variation_space
    axis, wall = int(space["wall"]["axis"].value), float(base.wall_pos)
    num = int(space["door"]["number"].value)
    centres = np.asarray(space["door"]["position"].value, dtype=np.float32)[:num]
    sizes = np.asarray(space["door"]["size"].value, dtype=np.float32)[:num]
    radius = float(space["agent"]["radius"].value.item())
    fits = sizes >= 1.1 * radius  # the environment's own rule for a door the agent passes
    centres = centres[fits] if fits.any() else centres
    return np.array([[wall, c] if axis == 1 else [c, wall] for c in centres], np.float32).reshape(-1, 2)


def tworoom_path_length(env: gym.Env, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length in simulator pixels of the shortest way between positions ``a`` and ``b`` (``(N, 2)`` each) of
    TwoRoom: straight within a room; between rooms, to a door's centre and on from there (as the environment
    measures a target's ``min_steps``)."""
    base = env.unwrapped
    axis, wall = int(base.variation_space["wall"]["axis"].value), float(base.wall_pos)
    a, b = np.asarray(a, np.float32).reshape(-1, 2), np.asarray(b, np.float32).reshape(-1, 2)
    k = 0 if axis == 1 else 1  # the coordinate the wall splits
    straight = np.linalg.norm(a - b, axis=1)
    doors = tworoom_doors(env)  # (K, 2)
    through = (np.linalg.norm(a[:, None] - doors[None], axis=2) + np.linalg.norm(b[:, None] - doors[None], axis=2)).min(1)
    return np.where((a[:, k] > wall) == (b[:, k] > wall), straight, through)


@dataclass
class PlacedStates:
    """Agent states placed across an environment, each with a random walk of action blocks from it."""

    frames: np.ndarray  # uint8 (N, S, S, 3): each start
    positions: np.ndarray  # float32 (N, R + 1, 2): the start and the agent's position after each block
    actions: np.ndarray  # float32 (N, R, frameskip * A): the blocks walked


def tworoom_states(count: int, blocks: int, frameskip: int, image_size: int, seed: int,
                   env_id: str = "swm/TwoRoom-v1") -> PlacedStates:
    """``count`` agent positions drawn uniformly over TwoRoom's free floor (reset seed ``seed``; the layout is the
    same for every seed), each rendered, then walked ``blocks`` blocks of ``frameskip`` uniform random actions in
    the simulator, recording where each block really leads (walls stop the agent)."""
    if env_id != "swm/TwoRoom-v1":
        raise ValueError(f"tworoom_states places agents in swm/TwoRoom-v1's rooms, not {env_id!r}")
    if count < 1 or blocks < 0 or frameskip < 1:
        raise ValueError(f"need count >= 1, blocks >= 0 and frameskip >= 1, got {count}, {blocks}, {frameskip}")
    check_training_seeds(seed, 1, f"the placed states of {env_id}", SWM_EVAL_SEEDS)
    env = make_swm_env(env_id)
    env.reset(seed=seed)
    low, high = action_box(env)
    base = env.unwrapped
    radius = float(base.variation_space["agent"]["radius"].value.item())
    half = float(base.variation_space["wall"]["thickness"].value) / 2
    size = float(np.asarray(env.render()).shape[0])
    wall, axis = float(base.wall_pos), int(base.variation_space["wall"]["axis"].value)
    rng = np.random.default_rng(seed)
    far = np.full(2, -1000.0, np.float32)  # a target no walk reaches: no episode ends on the way
    frames, positions, walked = [], [], []
    margin = radius + 3.0
    with tqdm(total=count, desc=f"placing {env_id}", unit="state", leave=False) as progress:
        while len(frames) < count:
            p = rng.uniform(margin, size - margin, 2).astype(np.float32)
            if abs(p[0 if axis == 1 else 1] - wall) < half + margin:
                continue  # inside the wall
            obs, info = reset_at(env_id, env, seed, p, far)
            here = state_of(env_id, obs, info)[:2]
            frames.append(frame(env, image_size))
            actions = rng.uniform(low, high, (blocks * frameskip, len(low))).astype(np.float32)
            track = [here]
            for t, action in enumerate(actions):
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    obs, info = reset_at(env_id, env, seed, state_of(env_id, obs, info), far)
                if (t + 1) % frameskip == 0:
                    track.append(state_of(env_id, obs, info)[:2])
            positions.append(np.stack(track))
            walked.append(actions.reshape(blocks, -1))
            progress.update(1)
    env.close()
    return PlacedStates(np.stack(frames), np.stack(positions).astype(np.float32),
                        np.stack(walked).astype(np.float32).reshape(count, blocks, frameskip * len(low)))


def collect_swm(
    env_id: str,
    episodes: int,
    out: str | os.PathLike,
    steps: int = 100,
    image_size: int = 64,
    noise: float = 0.3,
    seed: int = 100_000,
    overwrite: bool = False,
) -> Path:
    """Roll the expert of ``env_id`` for ``episodes`` episodes of ``steps`` steps into a new dataset.

    Args:
        env_id: A stable-worldmodel environment with a known expert (:data:`EXPERTS`).
        episodes: Episodes to record; episode ``e`` resets with seed ``seed + e``.
        out: Dataset directory to create.
        steps: Actions per episode (the target is redrawn each time it is reached).
        image_size: Side of the stored frames.
        noise: Standard deviation of the Gaussian noise the expert adds to its actions (clipped to the box).
        seed: First reset seed; also seeds the expert's noise. Seeds 0..99,999 are the evaluation's
            (:data:`~thinkjepa.envs.seeds.SWM_EVAL_SEEDS`) and refused.
        overwrite: Replace an existing dataset at ``out``.

    Returns:
        The dataset path.
    """
    check_training_seeds(seed, episodes, f"collect_swm({env_id})", SWM_EVAL_SEEDS)
    if episodes < 1 or steps < 1 or image_size < 8 or noise < 0:
        raise ValueError(f"collect_swm needs episodes, steps >= 1, image_size >= 8 and noise >= 0; got {episodes=} "
                         f"{steps=} {image_size=} {noise=}")
    env = make_swm_env(env_id)
    low, high = action_box(env)
    reached = 0
    with EpisodeWriter(out, overwrite=overwrite, action_names=[f"a{i}" for i in range(len(low))],
                       action_box=(low, high)) as writer:
        for e in tqdm(range(episodes), desc=f"{env_id} expert", unit="ep"):
            run = expert_rollout(env_id, env, steps, seed + e, noise, image_size)
            reached += run.targets_reached
            writer.add(EpisodeRecord.from_trajectory(env_id, seed + e, run.frames, run.actions, success=True))
        writer.info = {"env": env_id, "steps": steps, "noise": noise, "targets_reached": reached}
    env.close()
    return Path(out)

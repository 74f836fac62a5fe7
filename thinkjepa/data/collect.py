"""Collect BabyAI episodes with the BabyAI bot plus epsilon-random navigation actions.

Each step the bot (``minigrid.utils.baby_ai_bot.BabyAIBot``) suggests an action; with probability
``epsilon`` a uniformly random action from :data:`~thinkjepa.envs.babyai.NAV_ACTIONS` is taken instead
and the step is marked ``expert=False`` (even if it happens to equal the bot's choice). The bot is
then told the action actually taken (``bot.replan(action)``), which is how it replans after a
deviation: subgoals that asked for a specific action (open, pick up, drop) plan to undo a wrong one,
navigation subgoals re-search their path from the new state.

Only episodes the bot completes successfully within the step limit are kept. Dropped attempts are
counted by reason ("failed": limit reached or mission failed; "bot_error": the bot gave up — it
signals that with ``AssertionError`` or ``DisappearedBoxError``, e.g. after a random toggle opened a
box) and stored under ``info["dropped"]`` in the dataset header.

Per step we also record the bot's active subgoal (see :mod:`thinkjepa.data.bot_labels`) and the next
full-grid waypoint (see :mod:`thinkjepa.data.waypoints`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
from minigrid.utils.baby_ai_bot import BabyAIBot, DisappearedBoxError
from tqdm.auto import tqdm

from thinkjepa.data.bot_labels import active_subgoal, mission_targets
from thinkjepa.data.records import EpisodeRecord, SubgoalSegment, WaypointSegment, label_runs
from thinkjepa.data.waypoints import AgentState, Waypoint, kinds_from_encoding, path_waypoints, shortest_path
from thinkjepa.data.writer import EpisodeWriter
from thinkjepa.envs.babyai import NAV_ACTIONS, FullGridObservation, is_success, make_env
from thinkjepa.envs.seeds import check_training_seeds

log = logging.getLogger(__name__)


class WaypointFrames:
    """Label each step with its next full-grid waypoint and keep the episode's distinct renders.

    Args:
        env: the wrapped level, after ``reset``.
        max_gap: also place a waypoint every ``max_gap`` path steps (see
            :func:`~thinkjepa.data.waypoints.path_waypoints`); ``None``: door crossings and the end only.
    """

    def __init__(self, env: FullGridObservation, max_gap: int | None = None) -> None:
        self.env = env
        self.max_gap = max_gap
        self.frames: list[np.ndarray] = []
        self.states: list[tuple[int, int, int]] = []
        self._index: dict[tuple, int] = {}

    def label(self) -> int:
        """Episode-local index of the current step's next waypoint frame.

        When no target is reachable on the full grid (objects block every approach, which the bot
        solves by moving them), the label is the agent's own current state.
        """
        base = self.env.unwrapped
        encoding = base.grid.encode()  # (W, H, 3): the search's map and the dedup key in one pass
        kinds = kinds_from_encoding(encoding)
        here = AgentState(int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir))
        path = shortest_path(kinds, here, mission_targets(self.env))
        waypoint = path_waypoints(kinds, path, self.max_gap)[0] if path is not None else Waypoint(here, ())
        key = (waypoint, encoding.tobytes())
        if key not in self._index:
            s = waypoint.state
            self._index[key] = len(self.frames)
            self.frames.append(self.env.render_state((s.x, s.y), s.dir, waypoint.open_doors))
            self.states.append((s.x, s.y, s.dir))
        return self._index[key]


def record_episode(env: FullGridObservation, seed: int, epsilon: float) -> EpisodeRecord | str:
    """Run one bot episode from ``env.reset(seed=seed)``.

    Returns:
        The episode, or the reason it was dropped: ``"failed"`` or ``"bot_error"``.
    """
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    waypoints = WaypointFrames(env)
    frames, actions, expert, subgoals, wp_index = [obs], [], [], [], []
    reward, terminated = 0.0, False
    try:
        bot = BabyAIBot(env.unwrapped)
        suggested = bot.replan()
        while True:
            subgoals.append(active_subgoal(bot))
            wp_index.append(waypoints.label())
            from_bot = rng.random() >= epsilon
            action = int(suggested) if from_bot else int(NAV_ACTIONS[rng.integers(len(NAV_ACTIONS))])
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(obs)
            actions.append(action)
            expert.append(from_bot)
            if terminated or truncated:
                break
            suggested = bot.replan(action)
    except (AssertionError, DisappearedBoxError):
        return "bot_error"
    if not is_success(reward, terminated):
        return "failed"
    wp_index.append(waypoints.label())
    num_steps = len(actions)
    subgoal_runs = label_runs(subgoals)
    ends = np.empty(num_steps + 1, dtype=np.int32)
    ends[-1] = num_steps
    for start, end, _ in subgoal_runs:
        ends[start:end] = end
    return EpisodeRecord(
        level=env.unwrapped.spec.id if env.unwrapped.spec else type(env.unwrapped).__name__,
        seed=seed,
        mission=info["mission"],
        success=True,
        tile_size=env.tile_size,
        frames=np.stack(frames),
        actions=np.asarray(actions, dtype=np.int64),
        expert=np.asarray(expert, dtype=bool),
        bot_subgoal_end=ends,
        waypoint_index=np.asarray(wp_index, dtype=np.int32),
        waypoint_frames=np.stack(waypoints.frames),
        subgoals=[SubgoalSegment(s, e, kind, target) for s, e, (kind, target) in subgoal_runs],
        waypoints=[WaypointSegment(s, e, i, waypoints.states[i]) for s, e, i in label_runs(wp_index[:-1])],
    )


def collect(
    levels: list[str],
    episodes_per_level: int | list[int],
    out: str | os.PathLike,
    image_size: int = 64,
    epsilon: float = 0.2,
    seed: int = 0,
    max_steps: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Collect bot episodes on each level into a new dataset directory.

    Args:
        levels: BabyAI level ids, e.g. ``["BabyAI-GoToLocal-v0"]``.
        episodes_per_level: attempts per level (seeds ``seed .. seed + episodes_per_level - 1``), one
            number for every level or a list with one number per level (short levels need more);
            unsuccessful attempts are dropped, so a level may keep fewer.
        out: dataset directory to create (see :mod:`thinkjepa.data.episodes`).
        image_size: side of the square frames; must give every level >= 3 px tiles.
        epsilon: probability of replacing the bot's action by a random navigation action.
        seed: first reset seed; also seeds each episode's epsilon draws.
        max_steps: step limit per episode; ``None`` keeps each level's own limit.
        overwrite: replace an existing dataset at ``out``.

    Returns:
        The dataset path.

    Raises:
        ValueError: on a bad argument, or when every attempt was dropped.
        FileExistsError: if ``out`` exists and ``overwrite`` is False.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    counts = [episodes_per_level] * len(levels) if isinstance(episodes_per_level, int) else list(episodes_per_level)
    if len(counts) != len(levels):
        raise ValueError(f"episodes_per_level has {len(counts)} entries for {len(levels)} levels")
    if not levels or min(counts) < 1:
        raise ValueError(f"need at least one level and episode, got {levels=} {episodes_per_level=}")
    for level, count in zip(levels, counts):
        check_training_seeds(seed, count, f"collect({level})")
    envs = [make_env(level, image_size=image_size, max_steps=max_steps) for level in levels]  # fail early
    dropped: dict[str, Counter] = {level: Counter() for level in levels}
    with EpisodeWriter(out, overwrite=overwrite) as writer:
        bar = tqdm(total=sum(counts), desc="collect", unit="ep")
        for level, env, count in zip(levels, envs, counts):
            for k in range(count):
                result = record_episode(env, seed + k, epsilon)
                if isinstance(result, str):
                    dropped[level][result] += 1
                else:
                    writer.add(result)
                bar.update()
                bar.set_postfix(kept=len(writer), dropped=sum(sum(c.values()) for c in dropped.values()), refresh=False)
            env.close()
        bar.close()
        summary = {level: dict(counts) for level, counts in dropped.items()}
        if len(writer) == 0:
            raise ValueError(f"every attempt was dropped ({summary}); nothing written to {out}")
        writer.info.update(
            epsilon=epsilon,
            seed=seed,
            episodes_per_level=episodes_per_level,
            max_steps=max_steps,
            dropped=summary,
        )
    log.info("collected %d episodes into %s; dropped per level: %s", len(writer), out, summary)
    return Path(out)

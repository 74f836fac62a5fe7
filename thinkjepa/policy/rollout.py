"""Running a batch of seeded episodes in lock-step, and drawing what happened (subgoal sheets).

An episode that raises (environment or policy) is a failure with its error recorded; the batch goes on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from thinkjepa.envs.babyai import is_success, make_env
from thinkjepa.policy.demos import Demo
from thinkjepa.policy.plots import frame_grid, subgoal_sheet
from thinkjepa.policy.stats import EpisodeResult
from thinkjepa.protocols import EpisodeStart


def _start(demo: Demo, level: str, image_size: int) -> EpisodeStart:
    """What every agent is told of ``demo``: its instruction, the frame the bot's demonstration ended in (black
    where the bot failed: the flat agent then does not run) and the level."""
    goal = demo.goal_frame if demo.goal_frame is not None else np.zeros((image_size, image_size, 3), dtype=np.uint8)
    return EpisodeStart(demo.mission, goal, level)


def run_episodes(
    policy: Any,
    mode: str,
    level: str,
    demos: Sequence[Demo],
    image_size: int,
    max_steps: int,
    env_fn: Callable[..., Any] = make_env,
    keep_frames: int = 0,
    attach: Callable[[list], None] | None = None,
) -> tuple[list[EpisodeResult], list[np.ndarray]]:
    """Run one batch of episodes in lock-step; failures are recorded, never raised.

    Every agent is reset with the same :class:`~thinkjepa.protocols.EpisodeStart` s (instruction, goal
    image and level); ``attach`` receives the environments before that (an oracle subgoal source's simulators).
    An episode the agent refuses (its ``refusal``: a released agent's unknown words or grid) is a failure whose
    error starts with ``"refused: "``; the others run without it.
    """
    starts = [_start(d, level, image_size) for d in demos]
    refusal = getattr(policy, "refusal", None)
    if refusal is not None:
        reasons = [refusal(s) for s in starts]
        if any(reasons):
            taken = [d for d, why in zip(demos, reasons) if why is None]
            ran, pictures = (run_episodes(policy, mode, level, taken, image_size, max_steps, env_fn, keep_frames,
                                          attach) if taken else ([], []))
            ran_iter = iter(ran)
            results = [next(ran_iter) if why is None else
                       EpisodeResult(level, mode, d.seed, d.mission, False, 0, d.steps, error=f"refused: {why}")
                       for d, why in zip(demos, reasons)]
            return results, pictures
    b = len(demos)
    results: list[EpisodeResult | None] = [None] * b
    envs: list[Any] = [None] * b
    obs: list[np.ndarray | None] = [None] * b
    steps = np.zeros(b, dtype=int)
    active = np.zeros(b, dtype=bool)
    strips: list[list[np.ndarray]] = [[] for _ in range(min(keep_frames, b))]

    def finish(i: int, success: bool, error: str | None = None) -> None:
        active[i] = False
        results[i] = EpisodeResult(level, mode, demos[i].seed, demos[i].mission, success, int(steps[i]),
                                   demos[i].steps, error=error)

    for i, d in enumerate(demos):
        try:
            envs[i] = env_fn(level, image_size=image_size)
            obs[i], _ = envs[i].reset(seed=d.seed)
            active[i] = True
        except Exception as err:  # noqa: BLE001 - an evaluation survives a failing episode
            finish(i, False, f"reset: {type(err).__name__}: {err}")
    if attach is not None:
        attach(envs)
    # every agent is told the same: the instruction and the frame the bot's demonstration ended in
    policy.reset(starts)
    for i, d in enumerate(demos):  # no demonstration, no goal image: the flat policy cannot run
        if mode == "flat" and active[i] and d.goal_frame is None:
            finish(i, False, "no goal image: the bot failed this seed")
    for i in range(len(strips)):
        if obs[i] is not None:
            strips[i].append(obs[i])

    while active.any():
        rows = np.flatnonzero(active)
        try:
            actions = policy.act(np.stack([obs[i] for i in rows]), active)
        except Exception as err:  # noqa: BLE001
            msg = f"policy: {type(err).__name__}: {err}"
            traceback.print_exc()
            for i in rows:
                finish(i, False, msg)
            break
        for j, i in enumerate(rows):
            try:
                obs[i], reward, terminated, truncated, _ = envs[i].step(int(actions[j]))
            except Exception as err:  # noqa: BLE001
                finish(i, False, f"step {steps[i]}: {type(err).__name__}: {err}")
                continue
            steps[i] += 1
            if i < len(strips):
                strips[i].append(obs[i])
            if terminated or truncated or steps[i] >= max_steps:
                finish(i, is_success(reward, terminated))

    traces = getattr(policy, "traces", None)
    for i, r in enumerate(results):
        assert r is not None
        if traces:
            r.thinker_seconds = traces[i].thinker_seconds
            r.thinker_calls = traces[i].thinker_calls
            r.unreachable_requeries = traces[i].unreachable_requeries
            r.extra["trace"] = traces[i].to_json()
    total_steps = max(int(steps.sum()), 1)
    for i, r in enumerate(results):  # planner time is shared by the batch: split it by steps
        r.planner_seconds = policy.planner_seconds * steps[i] / total_steps
    for env in envs:
        if env is not None:
            env.close()
    pictures = []
    for i, frames in enumerate(strips):
        if not frames:
            continue
        trace = traces[i] if traces else None
        picture = None
        if trace is not None and trace.subgoals:
            r = results[i]
            outcome = f"{'success' if r.success else 'failure'} at t={r.steps}"
            try:
                picture = subgoal_picture(policy.world_model, level, demos[i].seed, image_size, frames, trace, outcome)
            except Exception:  # noqa: BLE001 - a picture that cannot be drawn costs the picture, not the run
                traceback.print_exc()
        pictures.append(picture if picture is not None else frame_grid(frames))
    return [r for r in results if r is not None], pictures


def subgoal_picture(world_model, level: str, seed: int, image_size: int, frames: Sequence[np.ndarray], trace: Any,
                    outcome: str, max_queries: int = 24) -> np.ndarray:
    """The subgoal sheet of one episode (:func:`~thinkjepa.policy.plots.subgoal_sheet`): each proposed z*
    drawn as the state of the episode's layout whose target latent is nearest to it (latent L2, the
    distance that decides "reached"), among every agent pose on a free cell or in a doorway."""
    queries = trace.queries[:max_queries]
    renders, gaps = nearest_layout_states(world_model, level, seed, image_size, torch.stack(trace.subgoals[: len(queries)]))
    return subgoal_sheet(queries, frames, renders, gaps, outcome)


def nearest_layout_states(world_model, level: str, seed: int, image_size: int, latents: torch.Tensor
                          ) -> tuple[list[np.ndarray], list[float]]:
    """For each of ``latents (Q, D)``: the render of the agent state of ``level``'s layout ``seed`` whose
    target latent is nearest (L2), and that distance."""
    from thinkjepa.data.poses import pose_frames

    states = pose_frames(level, [seed], image_size).frames
    device = next(world_model.parameters()).device
    encoded = torch.cat([world_model.target_encode(torch.as_tensor(states[k : k + 256], device=device))
                         for k in range(0, len(states), 256)])
    gaps, nearest = torch.cdist(latents.to(encoded), encoded).min(dim=1)
    return [states[k] for k in nearest.tolist()], gaps.tolist()

"""Evaluation harness: seeded BabyAI episodes, several environments stepped together.

    thinkjepa eval --world_model checkpoints/wm/babyai-tiny-stage2/world_model \
        --thinker checkpoints/thinker/babyai-tiny/thinker --episodes 100

For every level and seed it first runs the BabyAI bot (the ``bot`` row, and the source of the goal
image for the flat policy: the frame where the bot's demonstration ended), then each requested mode
on the same seeds:

* ``flat``          goal-image latent MPC (the world model alone);
* ``hierarchical``  thinker subgoals from the instruction only + latent MPC;
* ``oracle``        the same policy fed perfect subgoals (full-grid waypoints from the true state).

An episode that raises (environment or policy) is a failure with its error recorded; the run goes
on. Results: ``results.json`` (every episode), ``summary.json``, ``table.md`` and TensorBoard
pictures of a few episodes in ``out`` (a subgoal sheet for the subgoal-driven agents, the frames for the flat one).

Episodes run in chunks of ``num_envs``; each finished chunk is written to
``out/episodes/<level>/<mode>-<first episode>.json`` with the settings it was run with, so a killed
evaluation started again with the same arguments runs only the chunks it had not finished, and a
chunk written with other settings (another world model, thinker, planner, cost, threshold, seeds)
is refused rather than mixed in. ``workers > 1`` runs chunks in that many processes, each with its
own copy of the models; a chunk's episodes do not depend on which process ran it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.envs.babyai import is_success, make_env, navigation_space
from thinkjepa.planning.base import Planner
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.policy.demos import Demo, calibrate_reach_threshold, demonstrate
from thinkjepa.policy.flat import FlatPolicy
from thinkjepa.policy.hierarchical import HierarchicalPolicy
from thinkjepa.policy.mpc import PlanningCost
from thinkjepa.policy.plots import frame_grid, plot_success_by_length, save_png, subgoal_sheet
from thinkjepa.policy.settings import AgentSettings
from thinkjepa.policy.stats import EpisodeResult, from_json, markdown_table, summarize, to_json
from thinkjepa.protocols import EpisodeStart

MODES = ("bot", "flat", "hierarchical", "oracle")


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

    Every agent is reset with the same :class:`~thinkjepa.protocols.EpisodeStart` s (instruction and goal
    image); ``attach`` receives the environments before that (an oracle subgoal source's simulators).
    """
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
    blank = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    policy.reset([EpisodeStart(d.mission, d.goal_frame if d.goal_frame is not None else blank) for d in demos])
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


@dataclass(frozen=True)
class Chunk:
    """``len(demos)`` seeded episodes of one (level, mode), run together; ``start`` = index of the first."""

    level: str
    mode: str
    start: int
    demos: tuple[Demo, ...]
    reach_threshold: float
    keep_frames: int = 0


class ChunkRunner:
    """Runs :class:`Chunk` s with one set of models and settings, in this process or in a worker.

    Args:
        world_model: The world model every agent plans with.
        thinker: The hierarchical agent's thinker (``None`` without that mode).
        planner: The planner instance (its settings are recorded with every chunk).
        settings: The agents' settings; each chunk supplies its calibrated reach threshold.
    """

    def __init__(self, world_model, thinker, planner: Planner, settings: AgentSettings) -> None:
        self.world_model, self.thinker, self.planner, self.settings = world_model, thinker, planner, settings
        self.space = navigation_space()

    def policy(self, mode: str, reach_threshold: float, seed: int) -> FlatPolicy | HierarchicalPolicy:
        """A fresh agent for ``mode`` whose planner is seeded with ``seed`` (the chunk's first episode)."""
        settings = replace(self.settings, reach_threshold=reach_threshold)
        if mode == "flat":
            return FlatPolicy.from_settings(self.world_model, settings, self.space, seed, self.planner)
        return HierarchicalPolicy.from_settings(self.world_model, settings, thinker=self.thinker,
                                                oracle=mode == "oracle", space=self.space, seed=seed,
                                                planner=self.planner)

    def __call__(self, chunk: Chunk) -> tuple[list[EpisodeResult], list[np.ndarray]]:
        policy = self.policy(chunk.mode, chunk.reach_threshold, chunk.start)
        attach = policy.subgoals.attach if chunk.mode == "oracle" else None
        return run_episodes(policy, chunk.mode, chunk.level, chunk.demos, self.world_model.image_size,
                            self.settings.max_steps, keep_frames=chunk.keep_frames, attach=attach)


_WORKER_RUNNER: ChunkRunner | None = None


def _start_worker(world_model: str, thinker: str | None, device: str, threads: int, planner: Planner,
                  settings: AgentSettings) -> None:
    global _WORKER_RUNNER
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    wm, th = _load_models(world_model, thinker, device)
    _WORKER_RUNNER = ChunkRunner(wm, th, planner, settings)


def _run_in_worker(chunk: Chunk) -> tuple[list[EpisodeResult], list[np.ndarray]]:
    assert _WORKER_RUNNER is not None, "worker not started"
    return _WORKER_RUNNER(chunk)


def _load_models(world_model: str, thinker: str | None, device: str):
    from thinkjepa.worldmodel.export import load_world_model

    wm = load_world_model(world_model, device=device)
    th = None
    if thinker is not None:
        from thinkjepa.thinker.checkpoint import load_thinker

        th = load_thinker(thinker, world_model=wm, device=device)
    return wm, th


def _digest(directory: str) -> str:
    """SHA-256 over the JSON and safetensors files of a checkpoint directory (names and contents)."""
    h = hashlib.sha256()
    root = Path(directory)
    for f in sorted(p for p in root.rglob("*") if p.suffix in (".json", ".safetensors") and p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _chunk_settings(chunk: Chunk, common: dict[str, Any], thinker_digest: str | None, snap_depth: int = 0,
                    follow_paths: bool = False, snap_tabu: bool = False) -> dict[str, Any]:
    """Everything a chunk's episodes depend on, as stored beside its results (after a JSON round trip).
    The snapping settings are recorded for hierarchical chunks only: they change nothing else."""
    settings = {**common, "level": chunk.level, "mode": chunk.mode, "seeds": [d.seed for d in chunk.demos],
                "reach_threshold": None if chunk.mode == "flat" else chunk.reach_threshold,
                "thinker": thinker_digest if chunk.mode == "hierarchical" else None}
    if chunk.mode == "hierarchical":
        settings["snap_depth"] = snap_depth
        settings["follow_paths"] = bool(follow_paths and snap_depth)
        if snap_tabu and snap_depth:  # recorded only when on: chunks run before it existed stay valid
            settings["snap_tabu"] = True
    return json.loads(json.dumps(settings))


def _saved_chunk(path: Path, settings: dict[str, Any], stale: str = "error") -> list[EpisodeResult] | None:
    """The results stored at ``path`` (``None`` if there are none, or if they were run with other settings
    and ``stale="replace"``); an error if their settings differ and ``stale="error"``."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved["settings"] != settings:
        if stale == "replace":
            return None
        diff = sorted(k for k in settings.keys() | saved["settings"].keys()
                      if saved["settings"].get(k) != settings.get(k))
        raise ValueError(f"{path} holds episodes run with other settings ({', '.join(diff)}); evaluate into "
                         f"another --out, pass --stale replace, or delete {path.parent} to run them again")
    return from_json(saved["results"])


def _run_chunks(chunks: Sequence[Chunk], runner: Callable[[], ChunkRunner], workers: int, worker_args: tuple
                ) -> Iterator[tuple[Chunk, list[EpisodeResult], list[np.ndarray]]]:
    """Run ``chunks`` here (``workers <= 1``) or in a pool of ``workers`` processes, yielding each as it ends."""
    if workers <= 1 or len(chunks) <= 1:
        run = runner()
        for chunk in chunks:
            yield chunk, *run(chunk)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads running
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context, initializer=_start_worker,
                             initargs=worker_args) as pool:
        futures = {pool.submit(_run_in_worker, chunk): chunk for chunk in chunks}
        for future in as_completed(futures):
            yield futures[future], *future.result()


@torch.no_grad()
def evaluate(
    world_model: str,
    thinker: str | None = None,
    levels: list[str] | None = None,
    modes: list[str] | None = None,
    episodes: int = 100,
    seed: int = 1_000_000,
    num_envs: int = 16,
    max_steps: int = 128,
    planner: Planner | None = None,
    reach_threshold: float | None = None,
    patience: int = 4,
    requery_every: int = 8,
    oracle_gap: int | None = None,
    snap_depth: int = 0,
    follow_paths: bool = False,
    snap_tabu: bool = False,
    cost: PlanningCost | None = None,
    out: str = "results/eval",
    log_episodes: int = 2,
    device: str = "cpu",
    workers: int = 1,
    stale: Literal["error", "replace"] = "error",
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate the bot, flat, hierarchical and oracle agents on seeded BabyAI episodes.

    Args:
        world_model: Exported world-model directory (or Lightning ``.ckpt``).
        thinker: Thinker checkpoint directory; needed for the ``hierarchical`` mode.
        levels: BabyAI levels (default: GoToLocal and GoTo).
        modes: Any of ``bot``, ``flat``, ``hierarchical``, ``oracle``.
        episodes: Seeded episodes per level (seeds ``seed .. seed + episodes - 1``; training data
            uses small seeds, so the default start keeps evaluation layouts unseen).
        seed: First seed.
        num_envs: Environments stepped together and planned in one batch (one chunk).
        max_steps: Step limit per episode.
        planner: The latent planner (default: categorical CEM, horizon 6).
        reach_threshold: Latent distance at which a subgoal counts as reached (default: calibrated
            as half the median one-step latent distance along the bot's demonstrations).
        patience: Steps without progress before a subgoal is declared unreachable.
        requery_every: Thinker query budget in steps.
        oracle_gap: The oracle's subgoals: door crossings and the final approach (``None``, the
            thinker's training label), or also a waypoint every ``oracle_gap`` shortest-path steps.
        snap_depth: Move each thinker subgoal to the nearest latent the world model predicts within
            this many actions (:class:`~thinkjepa.policy.subgoals.ReachableSubgoals`, states merged
            within the reach threshold); 0 uses the thinker's z* as it is. Hierarchical mode only.
        follow_paths: With ``snap_depth``: execute the action path the world model predicts reaches
            each snapped subgoal instead of planning toward it (re-query when it is done).
        snap_tabu: With ``snap_depth``: never snap twice to the same state from the same frame of an
            episode (a re-query from where the last subgoal proved unreachable gets the next nearest).
        cost: The planning cost shared by every agent (:class:`~thinkjepa.policy.mpc.PlanningCost`;
            default: the world model's goal-distance head if it has one, plus latent L2).
        out: Output directory. Finished chunks already there (same settings) are reused.
        log_episodes: Episodes per (level, mode) drawn (subgoal sheets, or the frames for ``flat``).
        device: ``cpu`` or ``cuda``.
        workers: Processes that run chunks side by side (each loads the models; one torch thread
            each unless ``THINKJEPA_NUM_THREADS`` says otherwise).
        stale: What to do with chunks in ``out`` that were run with other settings: ``"error"`` (refuse,
            naming the settings that differ) or ``"replace"`` (run them again).

    Returns:
        ``{level: {mode: summary}}``.
    """
    levels = levels or ["BabyAI-GoToLocal-v0", "BabyAI-GoTo-v0"]
    modes = modes or list(MODES)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {list(MODES)}")
    if "hierarchical" in modes and thinker is None:
        raise ValueError("mode 'hierarchical' needs --thinker (a thinker checkpoint directory)")
    if stale not in ("error", "replace"):
        raise ValueError(f"stale must be 'error' or 'replace', got {stale!r}")
    if workers < 1 or num_envs < 1:
        raise ValueError(f"workers and num_envs must be >= 1, got {workers} and {num_envs}")
    thinker = thinker if "hierarchical" in modes else None
    wm, th = _load_models(world_model, thinker, device)
    for level in levels:  # fail before any compute on a bad level or image size
        make_env(level, image_size=wm.image_size).close()
    cost = cost or PlanningCost()
    cost.metric(wm)  # ... or a cost this world model cannot provide
    planner = planner or CEMPlanner(horizon=6, num_samples=128, iterations=6, num_elites=16)
    if snap_depth < 0:
        raise ValueError(f"snap_depth must be >= 0, got {snap_depth}")
    settings = AgentSettings(level=levels[0], cost=asdict(cost), patience=patience, requery_every=requery_every,
                             snap_depth=snap_depth, snap_tabu=snap_tabu, follow_paths=follow_paths,
                             oracle_gap=oracle_gap, max_steps=max_steps)
    from thinkjepa.worldmodel.export import fingerprint

    common = {"world_model": fingerprint(wm), "device": device, "planner_class": type(planner).__qualname__,
              "planner": dict(vars(planner)), "cost": asdict(cost), "max_steps": max_steps, "patience": patience,
              "requery_every": requery_every, "oracle_gap": oracle_gap}
    thinker_digest = _digest(thinker) if thinker is not None else None
    threads = int(os.environ.get("THINKJEPA_NUM_THREADS") or 1)
    worker_args = (world_model, thinker, device, threads, planner, settings)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out_dir / "tb"))
    all_results: list[EpisodeResult] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for level in levels:
        seeds = range(seed, seed + episodes)
        demos = [demonstrate(level, s, wm.image_size) for s in tqdm(seeds, desc=f"{level} bot", unit="ep")]
        threshold = reach_threshold or calibrate_reach_threshold(wm, demos)
        light = [replace(d, frames=None) for d in demos]  # what a chunk needs; the frames stay here
        done: dict[tuple[str, int], list[EpisodeResult]] = {}
        todo: list[Chunk] = []
        paths: dict[tuple[str, int], tuple[Path, dict[str, Any]]] = {}
        for mode in (m for m in modes if m != "bot"):
            for start in range(0, episodes, num_envs):
                chunk = Chunk(level, mode, start, tuple(light[start : start + num_envs]), threshold,
                              keep_frames=log_episodes if start == 0 else 0)
                path = out_dir / "episodes" / level / f"{mode}-{start:07d}.json"
                paths[mode, start] = path, _chunk_settings(chunk, common, thinker_digest, snap_depth, follow_paths, snap_tabu)
                saved = _saved_chunk(*paths[mode, start], stale=stale)
                if saved is None:
                    todo.append(chunk)
                else:
                    done[mode, start] = saved
        if done:
            print(f"{level}: {sum(map(len, done.values()))} episodes already in {out_dir / 'episodes' / level}")
        bar = tqdm(total=sum(len(c.demos) for c in todo), desc=f"{level} {'/'.join(sorted({c.mode for c in todo}))}",
                   unit="ep")
        for chunk, res, strips in _run_chunks(todo, lambda: ChunkRunner(wm, th, planner, settings), workers, worker_args):
            path, chunk_settings = paths[chunk.mode, chunk.start]
            atomic_write_text(path, json.dumps({"settings": chunk_settings, "results": to_json(res)}, indent=1))
            done[chunk.mode, chunk.start] = res
            for k, strip in enumerate(strips):
                writer.add_image(f"{level}/{chunk.mode}/episode{k}", strip, dataformats="HWC")
                save_png(strip, out_dir / "plots" / f"{level}-{chunk.mode}-episode{k}.png")
            bar.update(len(chunk.demos))
            bar.set_postfix({m: f"{np.mean([r.success for (mm, _), rs in done.items() if mm == m for r in rs]):.2f}"
                             for m in sorted({m for m, _ in done})})
        bar.close()
        summary[level] = {}
        for mode in modes:
            if mode == "bot":
                results = [EpisodeResult(level, "bot", d.seed, d.mission, d.success, d.steps, d.steps) for d in demos]
            else:
                results = [r for start in range(0, episodes, num_envs) for r in done[mode, start]]
            summary[level][mode] = summarize(results)
            summary[level][mode]["reach_threshold"] = threshold if mode in ("hierarchical", "oracle") else None
            writer.add_scalar(f"{level}/{mode}/success_rate", summary[level][mode]["success_rate"])
            all_results += results
        figure = plot_success_by_length(all_results, level)
        writer.add_image(f"{level}/success_by_length", figure, dataformats="HWC")
        save_png(figure, out_dir / "plots" / f"{level}-success-by-length.png")
    writer.close()
    table = markdown_table(summary)
    for name, text in (
        ("results.json", json.dumps(to_json(all_results), indent=1)),
        ("summary.json", json.dumps(summary, indent=2)),
        ("table.md", table + "\n"),
    ):
        atomic_write_text(out_dir / name, text)
    errored = sum(r.error is not None for r in all_results)
    print(table)
    print(f"\n{errored} of {len(all_results)} episodes failed with an error (recorded in results.json)")
    print(f"results written to {out_dir}")
    return summary


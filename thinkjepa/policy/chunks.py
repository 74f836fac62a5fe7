"""Evaluations in resumable chunks: ``num_envs`` seeded episodes of one (level, agent) run together, written
with the settings they were run with, and run in this process or in a pool of worker processes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinkjepa.envs.babyai import navigation_space
from thinkjepa.policy.demos import Demo
from thinkjepa.policy.flat import FlatPolicy
from thinkjepa.policy.hierarchical import HierarchicalPolicy
from thinkjepa.policy.mpc import PlanningCost
from thinkjepa.policy.rollout import run_episodes
from thinkjepa.policy.settings import AgentSettings
from thinkjepa.policy.stats import EpisodeResult, from_json


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
        settings: The agents' settings (planner included); each chunk supplies its calibrated reach threshold.
        built_for: A released agent's level (its agents refuse episodes not built for there), or ``None``.
    """

    def __init__(self, world_model, thinker, settings: AgentSettings, built_for: str | None = None) -> None:
        self.world_model, self.thinker, self.settings, self.built_for = world_model, thinker, settings, built_for
        self.space = navigation_space()

    def policy(self, mode: str, reach_threshold: float, seed: int) -> FlatPolicy | HierarchicalPolicy:
        """A fresh agent for ``mode`` whose planner is seeded with ``seed`` (the chunk's first episode)."""
        settings = replace(self.settings, reach_threshold=reach_threshold)
        if mode == "flat":
            agent = FlatPolicy.from_settings(self.world_model, settings, self.space, seed)
        else:
            agent = HierarchicalPolicy.from_settings(self.world_model, settings, thinker=self.thinker,
                                                     oracle=mode == "oracle", space=self.space, seed=seed)
        agent.built_for = self.built_for
        return agent

    def __call__(self, chunk: Chunk) -> tuple[list[EpisodeResult], list[np.ndarray]]:
        policy = self.policy(chunk.mode, chunk.reach_threshold, chunk.start)
        attach = policy.subgoals.attach if chunk.mode == "oracle" else None
        return run_episodes(policy, chunk.mode, chunk.level, chunk.demos, self.world_model.image_size,
                            self.settings.max_steps, keep_frames=chunk.keep_frames, attach=attach)


_WORKER_RUNNER: ChunkRunner | None = None


def _start_worker(world_model: str, thinker: str | None, device: str, threads: int, settings: AgentSettings,
                  built_for: str | None = None) -> None:
    global _WORKER_RUNNER
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    wm, th = load_models(world_model, thinker, device)
    _WORKER_RUNNER = ChunkRunner(wm, th, settings, built_for)


def _run_in_worker(chunk: Chunk) -> tuple[list[EpisodeResult], list[np.ndarray]]:
    assert _WORKER_RUNNER is not None, "worker not started"
    return _WORKER_RUNNER(chunk)


def load_models(world_model: str, thinker: str | None, device: str):
    from thinkjepa.worldmodel.export import load_world_model

    wm = load_world_model(world_model, device=device)
    th = None
    if thinker is not None:
        from thinkjepa.thinker.checkpoint import load_thinker

        th = load_thinker(thinker, world_model=wm, device=device)
    return wm, th


def digest(directory: str) -> str:
    """SHA-256 over the JSON and safetensors files of a checkpoint directory (names and contents)."""
    h = hashlib.sha256()
    root = Path(directory)
    for f in sorted(p for p in root.rglob("*") if p.suffix in (".json", ".safetensors") and p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


SNAPPING = ("snap_depth", "follow_paths", "snap_tabu", "snap_metric", "snap_max_gap")


def agent_record(settings: AgentSettings) -> dict[str, Any]:
    """The agent settings every chunk records: the planner as built (class and every attribute, defaults
    included), the cost and the rest of :class:`AgentSettings` but its level and reach threshold (a chunk
    records the threshold it ran with)."""
    planner = settings.make_planner()
    rest = {k: v for k, v in settings.to_dict().items() if k not in ("level", "reach_threshold", "planner", "cost")}
    return {"planner_class": type(planner).__qualname__, "planner": dict(vars(planner)),
            "cost": asdict(settings.planning_cost()), **rest}


def chunk_settings(chunk: Chunk, common: dict[str, Any], thinker_digest: str | None) -> dict[str, Any]:
    """Everything a chunk's episodes depend on, as stored beside its results (after a JSON round trip).
    The snapping settings are recorded for hierarchical chunks only: they change nothing else."""
    settings = {**common, "level": chunk.level, "mode": chunk.mode, "seeds": [d.seed for d in chunk.demos],
                "reach_threshold": None if chunk.mode == "flat" else chunk.reach_threshold,
                "thinker": thinker_digest if chunk.mode == "hierarchical" else None}
    if chunk.mode != "hierarchical":
        settings = {k: v for k, v in settings.items() if k not in SNAPPING}
    return json.loads(json.dumps(settings))


def saved_chunk(path: Path, settings: dict[str, Any], stale: str = "error") -> list[EpisodeResult] | None:
    """The results stored at ``path`` (``None`` if there are none, or if they were run with other settings
    and ``stale="replace"``); an error if their settings differ and ``stale="error"``."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    # a setting added since the chunk was run counts as its default there
    defaults = json.loads(json.dumps(AgentSettings().to_dict()))
    saved["settings"] = {**{k: v for k, v in defaults.items() if k in settings and k not in saved["settings"]},
                         **saved["settings"]}
    if isinstance(saved["settings"].get("cost"), dict):  # ... and so does a cost field added since
        saved["settings"]["cost"] = {**json.loads(json.dumps(asdict(PlanningCost()))), **saved["settings"]["cost"]}
    if saved["settings"] != settings:
        if stale == "replace":
            return None
        diff = sorted(k for k in settings.keys() | saved["settings"].keys()
                      if saved["settings"].get(k) != settings.get(k))
        raise ValueError(f"{path} holds episodes run with other settings ({', '.join(diff)}); evaluate into "
                         f"another --out, pass --stale replace, or delete {path.parent} to run them again")
    return from_json(saved["results"])


def run_chunks(chunks: Sequence[Chunk], runner: Callable[[], ChunkRunner], workers: int, worker_args: tuple
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

"""Evaluation harness: seeded BabyAI episodes, several environments stepped together.

    thinkjepa eval --world_model checkpoints/wm/babyai-tiny-stage2/world_model \
        --thinker checkpoints/thinker/babyai-tiny/thinker --episodes 100 --agent.snap_depth 8

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

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.envs.babyai import make_env
from thinkjepa.policy.chunks import (
    Chunk,
    ChunkRunner,
    agent_record,
    chunk_settings,
    digest,
    load_models,
    run_chunks,
    saved_chunk,
)
from thinkjepa.policy.demos import Demo, calibrate_reach_threshold, demonstrate
from thinkjepa.policy.plots import plot_success_by_length, save_png
from thinkjepa.policy.rollout import nearest_layout_states, run_episodes, subgoal_picture
from thinkjepa.policy.settings import AgentSettings
from thinkjepa.policy.stats import EpisodeResult, markdown_table, summarize, to_json
from thinkjepa.worldmodel.export import fingerprint

MODES = ("bot", "flat", "hierarchical", "oracle")
__all__ = ["MODES", "Demo", "calibrate_reach_threshold", "demonstrate", "evaluate", "nearest_layout_states",
           "run_episodes", "subgoal_picture"]


@torch.no_grad()
def evaluate(
    world_model: str,
    thinker: str | None = None,
    agent: AgentSettings | None = None,
    levels: list[str] | None = None,
    modes: list[str] | None = None,
    episodes: int = 100,
    seed: int = 1_000_000,
    num_envs: int = 16,
    out: str = "results/eval",
    log_episodes: int = 2,
    device: str = "cpu",
    workers: int = 1,
    stale: Literal["error", "replace"] = "error",
    built_for: str | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate the bot, flat, hierarchical and oracle agents on seeded BabyAI episodes.

    Args:
        world_model: Exported world-model directory (or Lightning ``.ckpt``).
        thinker: Thinker checkpoint directory; needed for the ``hierarchical`` mode.
        agent: What every agent plans with (:class:`~thinkjepa.policy.settings.AgentSettings`: planner, cost,
            reach threshold, patience, query budget, snapping, step limit); the defaults when ``None``. Its
            ``reach_threshold`` left ``None`` is calibrated per level as half the median one-step latent
            distance along the bot's demonstrations; its ``level`` is not used (``levels`` are evaluated).
        levels: BabyAI levels (default: GoToLocal and GoTo).
        modes: Any of ``bot``, ``flat``, ``hierarchical``, ``oracle``.
        episodes: Seeded episodes per level (seeds ``seed .. seed + episodes - 1``; training data
            uses small seeds, so the default start keeps evaluation layouts unseen).
        seed: First seed.
        num_envs: Environments stepped together and planned in one batch (one chunk).
        out: Output directory. Finished chunks already there (same settings) are reused.
        log_episodes: Episodes per (level, mode) drawn (subgoal sheets, or the frames for ``flat``).
        device: ``cpu`` or ``cuda``.
        workers: Processes that run chunks side by side (each loads the models; one torch thread
            each unless ``THINKJEPA_NUM_THREADS`` says otherwise).
        stale: What to do with chunks in ``out`` that were run with other settings: ``"error"`` (refuse,
            naming the settings that differ) or ``"replace"`` (run them again).
        built_for: A released agent's level: the agents refuse what they were not built for there (an instruction
            with words no mission of that level uses), and such episodes are recorded as refused failures.

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
    wm, th = load_models(world_model, thinker, device)
    for level in levels:  # fail before any compute on a bad level or image size
        make_env(level, image_size=wm.image_size).close()
    settings = agent or AgentSettings()
    settings.planning_cost().metric(wm)  # ... or a cost this world model cannot provide
    common = {"world_model": fingerprint(wm), "device": device, **agent_record(settings)}
    if built_for is not None:  # recorded only when set: chunks of one's own agents stay as they were
        common["built_for"] = built_for
    thinker_digest = digest(thinker) if thinker is not None else None
    threads = int(os.environ.get("THINKJEPA_NUM_THREADS") or 1)
    worker_args = (world_model, thinker, device, threads, settings, built_for)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out_dir / "tb"))
    all_results: list[EpisodeResult] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for level in levels:
        seeds = range(seed, seed + episodes)
        demos = [demonstrate(level, s, wm.image_size) for s in tqdm(seeds, desc=f"{level} bot", unit="ep")]
        threshold = settings.reach_threshold or calibrate_reach_threshold(wm, demos)
        light = [replace(d, frames=None) for d in demos]  # what a chunk needs; the frames stay here
        done: dict[tuple[str, int], list[EpisodeResult]] = {}
        todo: list[Chunk] = []
        paths: dict[tuple[str, int], tuple[Path, dict[str, Any]]] = {}
        for mode in (m for m in modes if m != "bot"):
            for start in range(0, episodes, num_envs):
                chunk = Chunk(level, mode, start, tuple(light[start : start + num_envs]), threshold,
                              keep_frames=log_episodes if start == 0 else 0)
                path = out_dir / "episodes" / level / f"{mode}-{start:07d}.json"
                paths[mode, start] = path, chunk_settings(chunk, common, thinker_digest)
                saved = saved_chunk(*paths[mode, start], stale=stale)
                if saved is None:
                    todo.append(chunk)
                else:
                    done[mode, start] = saved
        if done:
            print(f"{level}: {sum(map(len, done.values()))} episodes already in {out_dir / 'episodes' / level}")
        bar = tqdm(total=sum(len(c.demos) for c in todo), desc=f"{level} {'/'.join(sorted({c.mode for c in todo}))}",
                   unit="ep")
        for chunk, res, strips in run_chunks(todo, lambda: ChunkRunner(wm, th, settings, built_for), workers,
                                             worker_args):
            path, recorded = paths[chunk.mode, chunk.start]
            atomic_write_text(path, json.dumps({"settings": recorded, "results": to_json(res)}, indent=1))
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


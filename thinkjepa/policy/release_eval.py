"""Evaluate a released agent as it ships: ``thinkjepa release evaluate babyai-goto`` (``make eval-release``).

The bot, the release's flat agent (its world model, planner and cost, toward the bot's final frame) and
its hierarchical agent (the thinker, from the instruction alone) run on the same seeded episodes with
the settings stored in the release. By default the seeds start at 4,000,000
(:data:`~thinkjepa.envs.seeds.BABYAI_EVAL_SEEDS`): no training data of any released agent came from them and
no setting was chosen on them. ``record=True`` writes the table into the release's manifest
together with the digest of the files it was measured on, so the manifest says what exactly these
files do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from thinkjepa.envs.babyai import check_level
from thinkjepa.envs.seeds import BABYAI_EVAL_SEEDS
from thinkjepa.policy.evaluate import evaluate
from thinkjepa.policy.settings import release_settings
from thinkjepa.release import Release

FRESH_SEED = BABYAI_EVAL_SEEDS.start  # no training data or setting of a released agent came from here on
KEEP = ("episodes", "successes", "success_rate", "ci95", "mean_length", "mean_expert_length", "planning_ms_per_step",
        "thinker_share", "thinker_calls_per_episode", "errored")


def short_successes(rows: list[dict[str, Any]], per_agent: int = 5) -> dict[str, dict[str, list[int]]]:
    """``{level: {mode: seeds}}``: the seeds of each agent's shortest successful episodes (by the bot's length),
    which the test suite replays to show the shipped agent succeeding in a few seconds."""
    out: dict[str, dict[str, list[int]]] = {}
    for r in sorted(rows, key=lambda r: (r["expert_steps"], r["seed"])):
        if r["success"] and r["mode"] != "bot":
            seeds = out.setdefault(r["level"], {}).setdefault(r["mode"], [])
            if len(seeds) < per_agent:
                seeds.append(r["seed"])
    return out


def evaluate_release(
    name: str,
    episodes: int = 100,
    seed: int = FRESH_SEED,
    modes: list[str] | None = None,
    levels: list[str] | None = None,
    out: str | None = None,
    workers: int = 2,
    num_envs: int = 20,
    log_episodes: int = 2,
    record: bool = False,
    root: str | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate release ``name`` (hashes checked first) and print its table.

    Args:
        name: The release (``checkpoints/release/<name>``) or its directory.
        episodes: Seeded episodes per level and agent.
        seed: The first seed.
        modes: Agents: any of ``bot``, ``flat``, ``hierarchical``, ``oracle`` (default: the first three;
            a release without a thinker: bot and flat).
        levels: Levels (default: the one the release's settings were chosen for).
        out: Output directory (default ``results/release/<name>``); finished chunks there are reused.
        workers: Processes running episodes side by side.
        num_envs: Episodes stepped together (one planning batch).
        log_episodes: Episodes per agent drawn as subgoal sheets / frame strips (``<out>/plots``).
        record: Store the table in the release's manifest (only for a complete, unmodified evaluation).
        root: Where releases live.
        device: ``cpu`` or ``cuda``.
    """
    release = Release.open(name, root=root)
    settings = release_settings(release)
    thinker = release.thinker_path
    modes = modes or (["bot", "flat", "hierarchical"] if thinker else ["bot", "flat"])
    levels = levels or [settings.level]
    for level in levels:
        check_level(level, settings.level)  # another grid size: refused, naming both, before any compute
    out = out or str(Path("results") / "release" / release.name)
    summary = evaluate(
        world_model=str(release.world_model_path), thinker=str(thinker) if thinker else None, agent=settings,
        levels=levels, modes=modes, episodes=episodes, seed=seed, num_envs=num_envs, out=out,
        log_episodes=log_episodes, device=device, workers=workers, stale="replace", built_for=settings.level,
    )
    print(f"subgoal sheets and episode frames: {Path(out) / 'plots'}")
    if record:
        table = {level: {mode: {k: s[k] for k in KEEP} for mode, s in by_mode.items()}
                 for level, by_mode in summary.items()}
        rows = json.loads((Path(out) / "results.json").read_text())
        release.record_evaluation({"episodes": episodes, "seeds": [seed, seed + episodes - 1], "levels": levels,
                                   "modes": modes, "table": table, "short_successes": short_successes(rows),
                                   "command": f"thinkjepa release evaluate {release.name} --episodes {episodes} "
                                              f"--seed {seed} --record true"})
        print(f"recorded in {release.path / 'MANIFEST.json'}")
    return summary

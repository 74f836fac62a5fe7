"""Shared by the release tests: the settings of a small agent, and a tiny release assembled from saved parts."""

from __future__ import annotations

from pathlib import Path

from thinkjepa.policy.settings import AgentSettings
from thinkjepa.release import Release

LEVEL = "BabyAI-GoToLocal-v0"
SMALL_PLANNER = {"class_path": "thinkjepa.planning.cem.CEMPlanner",
                 "init_args": {"horizon": 2, "num_samples": 8, "iterations": 1, "num_elites": 2}}
SETTINGS = AgentSettings(level=LEVEL, planner=SMALL_PLANNER, cost={"distance": "latent", "latent_weight": 1.0},
                         reach_threshold=0.5, patience=3, requery_every=5, max_steps=8)


def make_release(root: Path, parts: tuple[Path, Path], name: str = "tiny") -> Release:
    release = Release.create(name, root=root, description="a tiny test release")
    record = {"recipe": "recipes/wm/babyai-tiny.yaml", "kind": "fit", "segments": []}
    release.publish_stage("wm", record, parts[0])
    release.publish_stage("thinker", {**record, "recipe": "recipes/thinker/babyai-tiny.yaml"}, parts[1])
    release.assemble("wm", "thinker", SETTINGS.to_dict())
    return release

"""Release recipes: every stage reads only what an earlier stage of its chain wrote.

A release is rebuilt on a fresh clone, where nothing of a developer's `checkpoints/` or `data/` exists. A stage
whose recipe still points at a local checkpoint, or at data no earlier stage collects, would fail (or train on
something stale) hours into the rebuild; this reads each chain and checks it against the recipes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thinkjepa.policy.settings import AgentSettings
from thinkjepa.release.build import ReleaseRecipe

ROOT = Path(__file__).resolve().parents[1]
RELEASES = sorted((ROOT / "recipes" / "release").glob("*.yaml"))
INPUT_KEYS = ("world_model", "init_from")


def _export_kind(recipe: dict) -> str:
    class_path = recipe["model"]["class_path"]
    return "vlm" if class_path.endswith("GroundingPretrainModule") else "thinker" if ".thinker." in class_path else "world_model"


@pytest.mark.parametrize("path", RELEASES, ids=[p.stem for p in RELEASES])
def test_each_stage_reads_only_what_earlier_stages_wrote(path: Path) -> None:
    spec = ReleaseRecipe.load(path)
    kinds: dict[str, str] = {}  # stage -> what its export is
    collected: set[str] = set()
    for stage in spec.stages:
        recipe = yaml.safe_load((ROOT / stage.recipe).read_text())
        if stage.collect:
            collected.add(recipe["out"])
            continue
        model, data = recipe["model"]["init_args"], recipe["data"]["init_args"]
        for key in INPUT_KEYS:
            if model.get(key):
                assert f"model.init_args.{key}" in stage.inputs, (
                    f"{path.name}: stage {stage.name} would read {key}={model[key]} from the local tree; "
                    "name the earlier stage that writes it in inputs")
        for key, source in stage.inputs.items():
            wanted = {"world_model": {"world_model"}, "init_from": {"world_model"} if _export_kind(recipe) == "world_model"
                      else {"vlm"} if _export_kind(recipe) == "vlm" else {"vlm", "thinker"}}[key.rsplit(".", 1)[1]]
            assert kinds[source] in wanted, f"{path.name}: {stage.name}.{key} reads a {kinds[source]} export from {source}"
        for root in [data.get("root"), *data.get("roots", [])]:
            if root:
                assert root in collected, f"{path.name}: {stage.name} reads {root}, which no earlier stage collects"
        trainer = recipe["trainer"]
        if trainer.get("accelerator") in ("gpu", "cuda"):
            assert "--trainer.accelerator=cpu" in stage.cpu_args, f"{path.name}: GPU stage {stage.name} has no CPU fallback"
        kinds[stage.name] = _export_kind(recipe)
    assert kinds[spec.agent["world_model"]] == "world_model"
    assert spec.agent.get("thinker") is None or kinds[spec.agent["thinker"]] == "thinker"
    agent = yaml.safe_load((ROOT / spec.agent["eval"]).read_text())["agent"]
    assert agent["planner"]["class_path"] and agent["cost"], "the agent's planner and cost come from its eval recipe"
    settings = AgentSettings.from_eval_recipe(ROOT / spec.agent["eval"])
    assert settings.make_planner() is not None and settings.planning_cost() is not None


def test_the_goto_release_ships_the_router_thinker_continued_against_its_world_model() -> None:
    spec = ReleaseRecipe.load(ROOT / "recipes" / "release" / "babyai-goto.yaml")
    stages = {s.name: s for s in spec.stages}
    names = list(stages)
    assert names.index("vlm-router") < names.index("thinker-cells") < names.index("thinker-gpu")
    assert spec.agent == {**spec.agent, "world_model": "distance-goto", "thinker": "thinker-gpu",
                          "eval": "recipes/eval/babyai-goto-snap.yaml"}
    # the shipped thinker is the router thinker finetuned against wm-goto, continued against the agent's world model
    assert stages["thinker-gpu"].inputs == {"model.init_args.world_model": "distance-goto",
                                            "model.init_args.init_from": "thinker-cells"}
    assert stages["thinker-cells"].inputs["model.init_args.init_from"] == "vlm-router"
    assert not stages["thinker-gpu"].variant_of and stages["thinker-gpu-lora"].variant_of == "thinker-gpu"

"""`make goto`: every stage reads only what an earlier stage wrote, and a killed stage resumes.

The Makefile's file targets order the stages; the recipes name each other's outputs. Both can drift
apart (a recipe renamed, an output directory moved), which would make `make goto` train a stage on a
missing or stale checkpoint hours into the run. This reads the commands `make -n` would run and checks
them against the recipes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned_commands(cwd: Path, target: str = "goto") -> list[list[str]]:
    """The thinkjepa commands `make -n -B target` prints from ``cwd``, each split into words."""
    out = subprocess.run(
        ["make", "-s", "-n", "-B", "-f", str(ROOT / "Makefile"), target], cwd=cwd, check=True,
        capture_output=True, text=True,
    ).stdout
    lines = out.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if "-m thinkjepa.cli" in line]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory with no data or checkpoints, where the Makefile's own prerequisites exist."""
    (tmp_path / "pyproject.toml").touch()
    return tmp_path


def _options(argv: list[str]) -> dict[str, str]:
    """``--key value`` and ``--key=value`` pairs of a command line."""
    opts, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("--"):
            if "=" in argv[i]:
                key, value = argv[i][2:].split("=", 1)
            else:
                key, value = argv[i][2:], argv[i + 1]
                i += 1
            opts[key] = value
        i += 1
    return opts


def _stage(argv: list[str]) -> tuple[str, set[str], str]:
    """(recipe, the paths the stage reads, the path it writes) for one planned command."""
    assert argv[:2] == ["-m", "thinkjepa.cli"], argv
    command, opts = argv[2], _options(argv[3:])
    recipe = yaml.safe_load((ROOT / opts["config"]).read_text())
    if command == "collect":
        return opts["config"], set(), recipe["out"]
    if command == "eval":
        return opts["config"], {recipe["world_model"], opts["thinker"]}, opts.get("out", recipe["out"])
    assert command == "fit", argv
    model, data = recipe["model"]["init_args"], recipe["data"]["init_args"]
    reads = {model.get("world_model"), model.get("init_from"), data.get("root"), *data.get("roots", [])}
    root_dir = recipe["trainer"]["default_root_dir"]
    (checkpointing,) = [c for c in recipe["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert checkpointing["init_args"]["dirpath"] == f"{root_dir}/checkpoints", (
        f"{opts['config']}: the Makefile resumes from <default_root_dir>/checkpoints/last.ckpt"
    )
    class_path = recipe["model"]["class_path"]
    export = "vlm" if class_path.endswith("GroundingPretrainModule") else "thinker" if ".thinker." in class_path else "world_model"
    return opts["config"], {p for p in reads if p}, f"{root_dir}/{export}"


@pytest.mark.parametrize("target", ["goto", "goto-cells"])
def test_goto_stages_read_only_what_earlier_stages_wrote(scratch: Path, target: str) -> None:
    written: list[str] = []
    recipes = []
    for argv in planned_commands(scratch, target):
        recipe, reads, writes = _stage(argv)
        missing = {p.removesuffix("/") for p in reads} - {w.removesuffix("/") for w in written}
        assert not missing, f"{recipe} reads {sorted(missing)} before any stage writes it (written: {written})"
        written.append(writes)
        recipes.append(recipe)
    assert len(set(recipes)) == len(recipes), f"a stage runs twice: {recipes}"
    # the chain ends in the evaluation of its GoTo thinker against the GoTo world model
    evaluation = {"goto": "recipes/eval/babyai-goto.yaml", "goto-cells": "recipes/eval/babyai-goto-snap.yaml"}
    assert recipes[-1] == evaluation[target]
    thinker = {"goto": "recipes/thinker/babyai-goto-stage2.yaml", "goto-cells": "recipes/thinker/babyai-goto-cells.yaml"}
    assert thinker[target] in recipes and "recipes/wm/babyai-tiny-gpu.yaml" in recipes
    assert not any("--ckpt_path" in " ".join(a) for a in planned_commands(scratch, target)), "nothing to resume from here"


def test_goto_resumes_a_killed_stage_and_skips_finished_ones(scratch: Path) -> None:
    # the data is collected and the GPU stage finished (its export is newer), the GoTo fine-tune was
    # killed after a checkpoint
    for data in ("babyai-gpu", "babyai-goto"):
        (scratch / "data" / data).mkdir(parents=True)
        (scratch / "data" / data / "episodes.json").write_text("{}")
        os.utime(scratch / "data" / data / "episodes.json", (1e9, 1e9))
    done = scratch / "checkpoints/wm/babyai-gpu/world_model/config.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    last = scratch / "checkpoints/wm/babyai-goto/checkpoints/last.ckpt"
    last.parent.mkdir(parents=True)
    last.touch()
    out = subprocess.run(
        ["make", "-s", "-n", "-f", str(ROOT / "Makefile"), "checkpoints/wm/babyai-goto-distance/world_model/config.json"],
        cwd=scratch, check=True, capture_output=True, text=True,
    ).stdout
    commands = [line for line in out.replace("\\\n", " ").splitlines() if "-m thinkjepa.cli" in line]
    assert len(commands) == 3, commands  # fine-tune (resumed), predictor, distance head; nothing before
    assert "recipes/wm/babyai-goto-finetune.yaml" in commands[0]
    assert "--ckpt_path=checkpoints/wm/babyai-goto/checkpoints/last.ckpt" in commands[0]
    assert not any("--ckpt_path" in c for c in commands[1:])

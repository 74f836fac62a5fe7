"""`thinkjepa release build`: a chain of real stages (data collection, training) published one at a time,
resumed from a parked checkpoint, then assembled into an agent that loads by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from release_helpers import SMALL_PLANNER

from thinkjepa.policy import FlatPolicy, HierarchicalPolicy
from thinkjepa.release import Release, ReleaseError
from thinkjepa.release.build import ReleaseRecipe, build, park, status


def chain(tmp_path, steps: int, name: str = "chain", variant: bool = False) -> str:
    data = tmp_path / "data"
    wm_args = ["--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
               "--trainer.callbacks.init_args.every_n_train_steps=2", f"--data.init_args.root={data}",
               "--data.init_args.batch_size=4"]
    recipe = {
        "name": name,
        "description": "a two-stage test chain",
        "stages": [
            {"name": "data", "collect": "recipes/data/babyai-tiny.yaml",
             "args": [f"--out={data}", "--episodes_per_level=[6, 1]"]},
            {"name": "wm", "fit": "recipes/wm/babyai-tiny.yaml", "args": [f"--trainer.max_steps={steps}", *wm_args]},
            # trained only when asked for: an alternative to "wm" the agent does not use
            *([{"name": "wm-b", "fit": "recipes/wm/babyai-tiny.yaml", "variant_of": "wm",
                "args": ["--trainer.max_steps=2", *wm_args]}] if variant else []),
        ],
        "agent": {"world_model": "wm", "thinker": None, "eval": "recipes/eval/babyai-tiny.yaml",
                  "calibration_episodes": 2, "settings": {"planner": SMALL_PLANNER}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_a_chain_builds_publishes_resumes_and_assembles(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("THINKJEPA_NUM_THREADS", "1")
    root, work = tmp_path / "releases", tmp_path / "build"
    first = build(chain(tmp_path, steps=2), root=str(root), work=str(work), until="wm")
    assert first.stage_done("data") and first.stage_done("wm") and not first.manifest["agent"]
    wm = first.stage("wm")
    assert wm["segments"][0]["wall_seconds"] > 0 and wm["segments"][0]["peak_rss_mb"] > 100
    assert wm["segments"][0]["hardware"] and wm["recipe"] == "recipes/wm/babyai-tiny.yaml"
    assert (first.path / "stages" / "wm" / "config.json").is_file()
    Release.open("chain", root=root)  # every published file is in the manifest with its hash

    # an interrupted 4-step run elsewhere: its 2-step checkpoint parked in the release carries it on
    second = Release.create("resumed", root=root)
    second.manifest["recipe"] = chain(tmp_path, steps=4, name="resumed")
    second.save()
    second.publish_stage("data", first.stage("data"))
    second.save()
    (work / "resumed" / "wm" / "checkpoints").mkdir(parents=True)
    (work / "resumed" / "wm" / "checkpoints" / "last.ckpt").write_bytes(
        (work / "chain" / "wm" / "checkpoints" / "last.ckpt").read_bytes())
    parked = park("resumed", "wm", root=str(root), work=str(work))
    assert parked == root / "resumed" / "resume" / "wm" / "last.ckpt"
    assert not Release.open("resumed", root=root).stage_done("wm")
    assert Release.open("resumed", root=root).stage("wm")["recipe"] == "recipes/wm/babyai-tiny.yaml"  # named while parked
    (work / "resumed").rename(tmp_path / "elsewhere")  # nothing of the first machine's run is left
    (tmp_path / "data").rename(tmp_path / "data-elsewhere")  # nor its data, which releases never hold
    resumed = build(chain(tmp_path, steps=4, name="resumed"), root=str(root), work=str(work))
    assert (tmp_path / "data" / "episodes.json").read_text() == (tmp_path / "data-elsewhere" / "episodes.json").read_text()
    log = (work / "resumed" / "wm.log").read_text()
    assert "Restoring states from the checkpoint" in log or "Restored all states" in log
    ckpt = torch.load(work / "resumed" / "wm" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 4
    assert not (root / "resumed" / "resume").exists()  # the parked checkpoint left once the export was in

    # assembled: a flat-only agent whose threshold was calibrated, loading by name
    agent = resumed.manifest["agent"]
    assert agent["thinker"] is None and agent["settings"]["reach_threshold"] > 0
    assert agent["settings"]["planner"] == SMALL_PLANNER
    flat = FlatPolicy.from_release("resumed", root=root)
    assert flat.mpc.planner.horizon == 2
    with pytest.raises(ReleaseError, match="ships no thinker"):
        HierarchicalPolicy.from_release("resumed", root=root)
    report = status("resumed", root=str(root))
    assert [r["stage"] for r in report["stages"]] == ["data", "wm"] and not report["problems"]
    assert json.loads((root / "resumed" / "MANIFEST.json").read_text())["stages"]["wm"]["export"] == "world_model"

    # the recipe is the authority on the agent's settings: a changed one is assembled again, an unchanged one not
    assembled = resumed.manifest["agent"]["assembled"]
    again = build(chain(tmp_path, steps=4, name="resumed"), root=str(root), work=str(work))
    assert again.manifest["agent"]["assembled"] == assembled
    recipe = yaml.safe_load(Path(chain(tmp_path, steps=4, name="resumed")).read_text())
    recipe["agent"]["settings"]["patience"] = 7
    (tmp_path / "patient.yaml").write_text(yaml.safe_dump(recipe))
    recipe["stages"] = yaml.safe_load(Path(chain(tmp_path, steps=4, name="resumed", variant=True)).read_text())["stages"]
    (tmp_path / "patient.yaml").write_text(yaml.safe_dump(recipe))
    patient = build(str(tmp_path / "patient.yaml"), root=str(root), work=str(work))
    assert not patient.stage_done("wm-b")  # a variant trains only when asked for
    assert patient.manifest["agent"]["settings"]["patience"] == 7 and patient.manifest["evaluation"] is None
    assert patient.manifest["agent"]["settings"]["reach_threshold"] > 0
    Release.open("resumed", root=root)  # still every file as the manifest says

    # the variant, asked for: trained beside "wm", its validation metrics recorded; the agent stays as it was
    variant = build(str(tmp_path / "patient.yaml"), root=str(root), work=str(work), only=["wm-b"])
    record = variant.stage("wm-b")
    assert record["finished"] and record["validation"]["val/loss"]["value"] > 0, record.get("validation")
    assert variant.manifest["agent"]["settings"]["patience"] == 7 and variant.manifest["evaluation"] is None
    assert (variant.path / "stages" / "wm-b" / "config.json").is_file()
    Release.open("resumed", root=root)

    # assembled again (new settings): a kept stage's export stays, where other intermediate exports are pruned
    recipe["agent"]["settings"]["patience"] = 9
    recipe["stages"][-1]["keep"] = True
    (tmp_path / "kept.yaml").write_text(yaml.safe_dump(recipe))
    kept = build(str(tmp_path / "kept.yaml"), root=str(root), work=str(work))
    assert kept.manifest["agent"]["settings"]["patience"] == 9
    assert (kept.path / "stages" / "wm-b" / "config.json").is_file() and kept.stage_export("wm-b").is_dir()
    Release.open("resumed", root=root)

    # the recipe takes a part from another stage: assembled again from it, and the stage it replaces exports nothing
    files = kept.manifest["files"]
    variant_files = {k.split("/", 2)[2]: v for k, v in files.items() if k.startswith("stages/wm-b/")}
    recipe["agent"]["world_model"] = "wm-b"
    (tmp_path / "swapped.yaml").write_text(yaml.safe_dump(recipe))
    swapped = build(str(tmp_path / "swapped.yaml"), root=str(root), work=str(work))
    assert swapped.stage("wm-b")["export"] == "world_model" and swapped.stage("wm")["export"] is None
    assert {k.split("/", 1)[1]: v for k, v in swapped.manifest["files"].items() if k.startswith("world_model/")} == variant_files
    assert swapped.manifest["evaluation"] is None and not (swapped.path / "stages" / "wm-b").exists()
    assert swapped.stage_done("wm") and swapped.manifest["agent"]["settings"]["patience"] == 9
    Release.open("resumed", root=root)
    assert build(str(tmp_path / "swapped.yaml"), root=str(root), work=str(work)).manifest["agent"]["assembled"] == \
        swapped.manifest["agent"]["assembled"]  # nothing changed: not assembled again


def test_release_recipes_name_real_recipes_and_earlier_stages(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "agent": {"world_model": "wm"}, "stages": [
        {"name": "wm", "fit": "recipes/wm/babyai-tiny.yaml", "inputs": {"model.init_args.init_from": "later"}}]}))
    with pytest.raises(ValueError, match="reads model.init_args.init_from from 'later'"):
        ReleaseRecipe.load(bad)
    bad.write_text(yaml.safe_dump({"name": "bad", "agent": {"world_model": "wm"}, "stages": [
        {"name": "wm", "fit": "recipes/wm/babyai-tiny.yaml", "variant_of": "wm-a"}]}))
    with pytest.raises(ValueError, match="stage 'wm' is a variant of 'wm-a', which is not an earlier stage"):
        ReleaseRecipe.load(bad)


def test_a_stage_commit_waits_for_a_held_git_index_and_names_other_git_errors(tmp_path, monkeypatch) -> None:
    import subprocess
    import threading

    from thinkjepa.release import build as build_module

    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README").write_text("x")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    monkeypatch.setattr(build_module, "REPO", repo)
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "t")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "t@t")
    release_dir = repo / "checkpoints" / "release" / "demo"
    release_dir.mkdir(parents=True)
    (release_dir / "MANIFEST.json").write_text("{}")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # another git process holds the index ...
    threading.Timer(3.0, lock.unlink).start()  # ... for three seconds
    build_module._commit(type("R", (), {"path": release_dir})(), "Release demo: stage one")
    log = subprocess.run([*git, "log", "--format=%s", "--name-only", "-1"], capture_output=True, text=True).stdout
    assert "Release demo: stage one" in log and "checkpoints/release/demo/MANIFEST.json" in log
    (release_dir / "more").write_text("y")
    lock.write_text("")
    with pytest.raises(ReleaseError, match="could not commit checkpoints/release/demo"):
        build_module._commit(type("R", (), {"path": release_dir})(), "again", attempts=2)  # held for good
    lock.unlink()


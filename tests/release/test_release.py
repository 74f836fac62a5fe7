"""Releases: loaded by name with the settings they were measured with, and refused when a file differs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from release_helpers import LEVEL, SETTINGS, make_release

from thinkjepa.envs.babyai import NAV_ACTIONS, make_env
from thinkjepa.policy import FlatPolicy, HierarchicalPolicy
from thinkjepa.policy.subgoals import ReachableSubgoals
from thinkjepa.release import Release, ReleaseError
from thinkjepa.worldmodel.export import fingerprint


def test_a_release_loads_by_name_as_the_agent_it_describes(release) -> None:
    root = release.path.parent
    agent = HierarchicalPolicy.from_release("tiny", root=root)
    assert agent.reach_threshold == SETTINGS.reach_threshold
    assert (agent.patience, agent.requery_every) == (SETTINGS.patience, SETTINGS.requery_every)
    assert agent.mpc.planner.horizon == 2 and agent.mpc.planner.num_samples == 8
    assert not isinstance(agent.subgoals, ReachableSubgoals)  # snap_depth 0 in these settings
    env = make_env(LEVEL, image_size=agent.world_model.image_size)
    obs, info = env.reset(seed=0)
    agent.reset(info["mission"])
    for _ in range(3):
        action = agent.act(obs)
        assert action in {int(a) for a in NAV_ACTIONS}
        obs, *_ = env.step(action)
    env.close()
    assert agent.traces[0].queries[0] == (0, "start")

    flat = FlatPolicy.from_release(release.path)  # by directory as well as by name
    assert fingerprint(flat.world_model) == fingerprint(agent.world_model)
    assert flat.mpc.cost == agent.mpc.cost

    snapped = HierarchicalPolicy.from_release("tiny", root=root, snap_depth=2)  # an ablation of one setting
    assert isinstance(snapped.subgoals, ReachableSubgoals) and snapped.subgoals.depth == 2


def test_the_manifest_lists_every_file_with_its_hash_and_the_stages(release) -> None:
    manifest = json.loads((release.path / "MANIFEST.json").read_text())
    on_disk = sorted(p.relative_to(release.path).as_posix() for p in release.path.rglob("*")
                     if p.is_file() and p.name not in ("MANIFEST.json", ".lock"))
    assert sorted(manifest["files"]) == on_disk
    assert any(f.startswith("world_model/") for f in on_disk) and any(f.startswith("thinker/") for f in on_disk)
    assert not (release.path / "stages").exists()  # the stage exports became the agent's parts
    assert manifest["stages"]["wm"]["export"] == "world_model" and manifest["stages"]["thinker"]["export"] == "thinker"
    assert manifest["agent"]["settings"]["reach_threshold"] == SETTINGS.reach_threshold


@pytest.mark.parametrize("damage", ["alter", "remove", "add"])
def test_a_file_that_differs_from_the_manifest_is_named(release, damage) -> None:
    weights = release.path / "world_model" / "model.safetensors"
    if damage == "alter":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit of one byte
        weights.write_bytes(bytes(data))
        expected, what = weights, "altered"
    elif damage == "remove":
        expected = release.path / "thinker" / "config.json"
        expected.unlink()
        what = "missing"
    else:
        expected = release.path / "thinker" / "notes.txt"
        expected.write_text("x")
        what = "not in the manifest"
    for load in (HierarchicalPolicy.from_release, FlatPolicy.from_release):
        with pytest.raises(ReleaseError, match=f"{expected}.*{what}"):
            load("tiny", root=release.path.parent)


def test_unknown_and_unfinished_releases_are_clear_errors(tmp_path, parts) -> None:
    root = tmp_path / "releases"
    make_release(root, parts, name="done")
    with pytest.raises(ReleaseError, match="no release 'nope'.*releases in .*: done"):
        HierarchicalPolicy.from_release("nope", root=root)
    unfinished = Release.create("half", root=root)
    unfinished.publish_stage("wm", {"recipe": "recipes/wm/babyai-tiny.yaml", "segments": []}, parts[0])
    unfinished.save()
    with pytest.raises(ReleaseError, match="'half'.*no agent yet.*stages done: wm"):
        HierarchicalPolicy.from_release("half", root=root)


def test_a_release_loads_in_a_new_process(release) -> None:
    code = ("import sys; from thinkjepa.policy import HierarchicalPolicy; "
            "p = HierarchicalPolicy.from_release(sys.argv[1], root=sys.argv[2]); print(p.reach_threshold)")
    out = subprocess.run([sys.executable, "-c", code, "tiny", str(release.path.parent)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) == SETTINGS.reach_threshold


def test_recorded_evaluation_is_tied_to_the_files(release) -> None:
    release.record_evaluation({"table": {LEVEL: {"flat": {"successes": 1, "episodes": 2}}}})
    reopened = Release.open("tiny", root=release.path.parent)
    assert reopened.manifest["evaluation"]["agent_digest"] == reopened.agent_digest()
    assert np.isclose(reopened.manifest["evaluation"]["table"][LEVEL]["flat"]["successes"], 1)


def test_the_command_line_names_a_bad_input_in_one_line(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "thinkjepa.cli", "release", "verify", "nope", "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"thinkjepa: error: no release 'nope': {tmp_path / 'nope' / 'MANIFEST.json'} does not exist "
        f"(releases in {tmp_path}: none)", "(THINKJEPA_DEBUG=1 shows the traceback)"]

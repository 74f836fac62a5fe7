"""The agents that ship: loaded by name from this checkout, they succeed on episodes they were measured to
succeed on (the shortest successes of their recorded evaluation, replayed one at a time)."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.envs.babyai import is_success, make_env
from thinkjepa.policy import FlatPolicy, HierarchicalPolicy
from thinkjepa.policy.demos import demonstrate
from thinkjepa.release import Release, release_root

RELEASES = sorted(p.parent.name for p in release_root().glob("*/MANIFEST.json"))


def _evaluated(name: str) -> Release | None:
    release = Release.open(name, verify=False)
    return release if release.manifest.get("agent") and release.manifest.get("evaluation") else None


@pytest.mark.parametrize("name", RELEASES)
def test_a_release_matches_its_manifest(name: str) -> None:
    release = Release.open(name)  # raises, naming every file that differs
    assert release.manifest["name"] == name
    if release.manifest.get("evaluation"):
        assert release.manifest["evaluation"]["agent_digest"] == release.agent_digest(), (
            "the recorded evaluation was measured on other files: run make eval-release")


@pytest.mark.parametrize("name", RELEASES)
@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
def test_the_released_agent_succeeds_where_it_was_measured_to(name: str, mode: str) -> None:
    release = _evaluated(name)
    if release is None:
        pytest.skip(f"release {name} has no evaluated agent yet")
    level = release.manifest["agent"]["settings"]["level"]
    seeds = release.manifest["evaluation"]["short_successes"].get(level, {}).get(mode, [])[:3]
    if not seeds:
        pytest.skip(f"release {name}: no recorded {mode} success on {level}")
    agent = (HierarchicalPolicy if mode == "hierarchical" else FlatPolicy).from_release(name)
    max_steps = release.manifest["agent"]["settings"]["max_steps"]
    wins = 0
    for seed in seeds:
        env = make_env(level, image_size=agent.world_model.image_size)
        obs, info = env.reset(seed=seed)
        if mode == "flat":
            agent.reset(demonstrate(level, seed, agent.world_model.image_size).goal_frame[None])
        else:
            agent.reset(info["mission"])
        for _ in range(max_steps):
            action = agent.act(obs if mode == "hierarchical" else obs[None])
            obs, reward, terminated, truncated, _ = env.step(int(np.asarray(action).reshape(-1)[0]))
            if terminated or truncated:
                break
        wins += is_success(reward, terminated)
        env.close()
    assert wins >= len(seeds) - 1, f"{name} {mode}: {wins} of {len(seeds)} recorded successes replayed"


def test_a_released_agent_refuses_a_level_of_another_grid_and_names_both() -> None:
    from thinkjepa.envs.babyai import check_level, grid_size
    from thinkjepa.policy.release_eval import evaluate_release
    from thinkjepa.protocols import EpisodeStart

    assert grid_size("BabyAI-GoToLocal-v0") == (8, 8) and grid_size("BabyAI-GoTo-v0") == (22, 22)
    check_level("BabyAI-GoToRedBall-v0", "BabyAI-GoToLocal-v0")  # another level, the same grid: accepted
    with pytest.raises(ValueError, match=r"BabyAI-GoTo-v0 has a 22x22 grid.*built on BabyAI-GoToLocal-v0 \(8x8\)"):
        check_level("BabyAI-GoTo-v0", "BabyAI-GoToLocal-v0")
    with pytest.raises(ValueError, match="unknown level"):
        check_level("BabyAI-NoSuchLevel-v0", "BabyAI-GoToLocal-v0")
    assembled = [n for n in RELEASES if Release.open(n, verify=False).manifest.get("agent")]
    if not assembled:
        pytest.skip("no assembled release")
    name = assembled[0]
    built_for = Release.open(name, verify=False).manifest["agent"]["settings"]["level"]
    other = "BabyAI-GoTo-v0" if grid_size(built_for) != grid_size("BabyAI-GoTo-v0") else "BabyAI-GoToLocal-v0"
    agent = HierarchicalPolicy.from_release(name)
    agent.reset(EpisodeStart(instruction="go to the red ball", level=built_for))  # its own level: fine
    with pytest.raises(ValueError, match=r"\['door'\], words no mission of .* uses"):  # an object it never saw named
        agent.reset(EpisodeStart(instruction="go to the red door", level=built_for))
    with pytest.raises(ValueError, match=f"{other} has a"):
        agent.reset(EpisodeStart(instruction="go to the red ball", level=other))
    flat = FlatPolicy.from_release(name)
    goal = np.zeros((agent.world_model.image_size,) * 2 + (3,), np.uint8)
    with pytest.raises(ValueError, match=f"{other} has a"):
        flat.reset(EpisodeStart(goal_image=goal, level=other))
    with pytest.raises(ValueError, match=f"{other} has a"):  # before any episode runs
        evaluate_release(name, episodes=1, levels=[other], out=None)

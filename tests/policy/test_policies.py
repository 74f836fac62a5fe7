"""Flat and hierarchical policies, and the evaluation harness, on tiny untrained models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from thinkjepa.envs.babyai import NAV_ACTIONS, NUM_ACTIONS, make_env
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.spaces import DiscreteSpace
from thinkjepa.policy import FlatPolicy, HierarchicalPolicy, OracleSubgoals, ThinkerSubgoals
from thinkjepa.policy.evaluate import Demo, evaluate, run_episodes
from thinkjepa.policy.plots import COLORS, length_bins, success_by_length
from thinkjepa.policy.settings import AgentSettings
from thinkjepa.policy.stats import EpisodeResult, wilson_interval
from thinkjepa.protocols import EpisodeStart, Policy, SubgoalSource
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, save_world_model

SPACE = DiscreteSpace(NUM_ACTIONS, allowed=tuple(int(a) for a in NAV_ACTIONS))


@pytest.fixture(scope="module")
def wm() -> JEPA:
    torch.manual_seed(0)
    enc = EncoderConfig(image_size=64, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    return JEPA(enc, PredictorConfig(hidden_dim=32, depth=1)).eval()


PLANNER = {"horizon": 3, "num_samples": 16, "iterations": 2, "num_elites": 4}


def planner() -> CEMPlanner:
    return CEMPlanner(**PLANNER)


def agent(**values) -> AgentSettings:
    """The small agent the harness tests run: this file's planner, the given settings."""
    return AgentSettings(planner={"class_path": "thinkjepa.planning.cem.CEMPlanner", "init_args": PLANNER}, **values)


class FixedSubgoal:
    """A subgoal source that always proposes the same latent and counts its calls."""

    def __init__(self, z: torch.Tensor) -> None:
        self.z, self.calls = z, 0

    def reset(self, instructions, envs=None) -> None:
        pass

    def propose(self, rows, images):
        self.calls += len(rows)
        return self.z.expand(len(rows), -1)


def frames(n: int) -> np.ndarray:
    env = make_env("BabyAI-GoToLocal-v0", image_size=64)
    obs, _ = env.reset(seed=0)
    return np.stack([obs] * n)


def test_flat_policy_acts_with_allowed_actions_for_active_rows(wm):
    policy = FlatPolicy(wm, planner(), SPACE)
    policy.reset(frames(3))
    actions = policy.act(frames(3))
    assert actions.shape == (3,) and set(actions.tolist()) <= set(SPACE.allowed_ids)
    active = np.array([True, False, True])
    assert policy.act(frames(2), active).shape == (2,)
    with pytest.raises(ValueError, match="2 observations for 3 active"):
        policy.act(frames(2))


def test_hierarchical_query_reasons(wm):
    obs = frames(1)
    far = FixedSubgoal(torch.full((1, 16), 100.0))
    policy = HierarchicalPolicy(wm, far, planner(), SPACE, reach_threshold=1e-3, patience=2, requery_every=100)
    policy.reset("go to the red ball")
    for _ in range(6):
        action = policy.act(obs[0])  # the same frame every step: no progress toward a far subgoal
    assert isinstance(action, int)
    reasons = [r for _, r in policy.traces[0].queries]
    assert reasons[0] == "start" and "unreachable" in reasons
    assert policy.traces[0].unreachable_requeries == reasons.count("unreachable")

    here = FixedSubgoal(wm.target_encode(torch.as_tensor(obs)))
    policy = HierarchicalPolicy(wm, here, planner(), SPACE, reach_threshold=1e-3, patience=100, requery_every=100)
    policy.reset(["a", "b"])
    policy.act(np.concatenate([obs, obs]))
    policy.act(np.concatenate([obs, obs]))
    assert [[r for _, r in t.queries] for t in policy.traces] == [["start", "reached"]] * 2
    assert len(policy.traces[0].distance) == 2

    # a subgoal handed back right after it counted as reached was not reached: it must be approached closer
    z = wm.target_encode(torch.as_tensor(obs))
    near = FixedSubgoal(z + 0.5 * torch.nn.functional.normalize(torch.ones_like(z), dim=-1))  # 0.5 away
    policy = HierarchicalPolicy(wm, near, planner(), SPACE, reach_threshold=0.8, patience=100, requery_every=100)
    policy.reset("go to the red ball")
    for _ in range(4):
        policy.act(obs[0])
    assert policy.traces[0].queries == [(0, "start"), (1, "reached")]  # 0.5 < 0.8, then no longer < 0.4
    assert policy.tighten[0] == 0.5

    # the query budget: a subgoal neither reached nor given up on is asked for again every requery_every steps
    policy = HierarchicalPolicy(wm, far, planner(), SPACE, reach_threshold=1e-3, patience=100, requery_every=3)
    policy.reset("go to the red ball")
    for _ in range(7):
        policy.act(obs[0])
    assert policy.traces[0].queries == [(0, "start"), (3, "budget"), (6, "budget")]


def test_one_contract_for_every_agent(wm):
    """Flat and hierarchical agents take the same EpisodeStart; one frame in, one action out for one episode."""
    obs = frames(1)[0]
    start = EpisodeStart("go to the red ball", goal_image=obs)
    flat = FlatPolicy(wm, planner(), SPACE)
    hier = HierarchicalPolicy(wm, ThinkerSubgoalsStub(), planner(), SPACE, reach_threshold=0.1)
    for agent in (flat, hier):
        assert isinstance(agent, Policy)
        agent.reset(start)
        assert isinstance(agent.act(obs), int)
        agent.reset([start, start])
        assert agent.act(np.stack([obs, obs])).shape == (2,)
    assert isinstance(hier.subgoals, SubgoalSource) and isinstance(OracleSubgoals(wm), SubgoalSource)
    with pytest.raises(ValueError, match="goal image: episodes \\[0\\]"):
        flat.reset(EpisodeStart("go to the red ball"))
    with pytest.raises(ValueError, match="reads the instruction: episodes \\[1\\]"):
        HierarchicalPolicy(wm, ThinkerSubgoals(ZeroThinker()), planner(), SPACE).reset([start, EpisodeStart(goal_image=obs)])
    with pytest.raises(ValueError, match="attach\\(envs\\) before reset"):
        OracleSubgoals(wm).reset([start])


class ZeroThinker:
    latent_dim = 16

    def propose(self, images, instructions):
        return torch.zeros(len(instructions), 16)


class ThinkerSubgoalsStub:
    """A subgoal source that always proposes the origin."""

    name = "stub"

    def reset(self, episodes):
        self.n = len(episodes)

    def propose(self, rows, images):
        return torch.zeros(len(rows), 16)


def test_oracle_subgoals_encode_a_rendered_waypoint(wm):
    env = make_env("BabyAI-GoToLocal-v0", image_size=64)
    obs, _ = env.reset(seed=3)
    oracle = OracleSubgoals(wm)
    oracle.attach([env])
    oracle.reset([EpisodeStart("x")])
    z = oracle.propose([0], torch.as_tensor(obs[None]))
    assert z.shape == (1, 16)
    assert not torch.allclose(z, wm.target_encode(torch.as_tensor(obs[None])))  # the waypoint is elsewhere


class ExplodingEnv:
    """Wraps a real level and raises on its second step."""

    def __init__(self, level: str, image_size: int) -> None:
        self.env, self.steps = make_env(level, image_size=image_size), 0

    def reset(self, seed=None):
        return self.env.reset(seed=seed)

    def step(self, action):
        self.steps += 1
        if self.steps == 2:
            raise RuntimeError("simulator exploded")
        return self.env.step(action)

    def close(self):
        self.env.close()


def test_an_episode_that_raises_is_a_recorded_failure_and_the_rest_finish(wm):
    demos = [Demo(s, "go to x", True, 5, frames(1)[0], None) for s in range(3)]
    calls = []

    def env_fn(level, image_size):
        calls.append(level)
        return ExplodingEnv(level, image_size) if len(calls) == 2 else make_env(level, image_size=image_size)

    policy = FlatPolicy(wm, planner(), SPACE)
    results, _ = run_episodes(policy, "flat", "BabyAI-GoToLocal-v0", demos, 64, max_steps=4, env_fn=env_fn)
    assert len(results) == 3
    assert results[1].error == "step 1: RuntimeError: simulator exploded" and not results[1].success
    assert results[0].error is None and results[2].error is None
    assert results[0].steps >= 1 and results[2].steps >= 1


def test_evaluate_writes_json_table_and_tensorboard(wm, tmp_path):
    save_world_model(wm, tmp_path / "wm")
    summary = evaluate(
        world_model=str(tmp_path / "wm"), levels=["BabyAI-GoToLocal-v0"], modes=["bot", "flat", "oracle"],
        episodes=3, num_envs=2, agent=agent(max_steps=3), out=str(tmp_path / "out"),
    )
    level = summary["BabyAI-GoToLocal-v0"]
    assert level["bot"]["success_rate"] == 1.0 and level["bot"]["episodes"] == 3
    assert level["flat"]["episodes"] == 3 and level["oracle"]["episodes"] == 3
    assert level["oracle"]["thinker_calls_per_episode"] >= 1
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results) == 9 and {r["mode"] for r in results} == {"bot", "flat", "oracle"}
    for r in results:  # the oracle's episodes carry their step-by-step trace, the others none
        trace = r["extra"].get("trace")
        assert (trace is not None) == (r["mode"] == "oracle")
        if trace:
            assert trace["queries"][0] == [0, "start"] and len(trace["queries"]) == r["thinker_calls"]
            assert len(trace["distance"]) == len(trace["predicted_cost"]) == r["steps"]
    queries = level["oracle"]["queries_per_episode"]
    assert queries["start"] == 1.0 and level["flat"]["queries_per_episode"] is None
    assert sum(queries.values()) == pytest.approx(level["oracle"]["thinker_calls_per_episode"])
    assert "| BabyAI-GoToLocal-v0 | flat |" in (tmp_path / "out" / "table.md").read_text()
    assert any((tmp_path / "out" / "tb").iterdir())
    from PIL import Image

    plot = np.asarray(Image.open(tmp_path / "out" / "plots" / "BabyAI-GoToLocal-v0-success-by-length.png"))
    assert plot.shape == (320, 560, 3) and (plot == COLORS["bot"]).all(-1).any()  # the bot's bars are drawn
    grid = np.asarray(Image.open(tmp_path / "out" / "plots" / "BabyAI-GoToLocal-v0-flat-episode0.png"))
    assert grid.shape == (64 + 14, 4 * 64 + 3 * 4, 3)  # 4 frames (start + 3 steps) in a row, captioned
    sheet = np.asarray(Image.open(tmp_path / "out" / "plots" / "BabyAI-GoToLocal-v0-oracle-episode0.png"))
    oracle0 = next(r for r in results if r["mode"] == "oracle")
    panels = 2 * oracle0["thinker_calls"] + 1  # (frame, subgoal) per query, then the final frame
    rows = -(-panels // 8)  # 4 pairs a row, panels twice the frame size under a 14 px caption
    assert sheet.shape[:2] == (rows * (2 * 64 + 14 + 4) - 4, min(panels, 8) * (2 * 64 + 4) - 4)


def _episodes(path: Path) -> list[tuple]:
    """What an evaluation decided per episode (timings left out: they differ run to run)."""
    keep = ("level", "mode", "seed", "mission", "success", "steps", "expert_steps", "thinker_calls",
            "unreachable_requeries", "error")
    return [tuple(r[k] for k in keep) for r in json.loads(path.read_text())]


def test_evaluate_resumes_from_finished_chunks_and_refuses_other_settings(wm, tmp_path, monkeypatch):

    save_world_model(wm, tmp_path / "wm")
    args = dict(world_model=str(tmp_path / "wm"), levels=["BabyAI-GoToLocal-v0"], modes=["bot", "flat", "oracle"],
                episodes=4, num_envs=2, agent=agent(max_steps=3), out=str(tmp_path / "out"))
    first = evaluate(**args)
    chunks = sorted(p.name for p in (tmp_path / "out" / "episodes" / "BabyAI-GoToLocal-v0").iterdir())
    assert chunks == ["flat-0000000.json", "flat-0000002.json", "oracle-0000000.json", "oracle-0000002.json"]
    before = _episodes(tmp_path / "out" / "results.json")

    # killed after three chunks: only the fourth runs again, and the results are the same
    (tmp_path / "out" / "episodes" / "BabyAI-GoToLocal-v0" / "oracle-0000002.json").unlink()
    (tmp_path / "out" / "results.json").unlink()
    ran = []
    import thinkjepa.policy.chunks as chunks_module

    real = chunks_module.run_episodes
    monkeypatch.setattr(chunks_module, "run_episodes", lambda policy, mode, level, demos, *a, **k: ran.append(
        (mode, [d.seed for d in demos])) or real(policy, mode, level, demos, *a, **k))
    again = evaluate(**args)
    assert ran == [("oracle", [1_000_002, 1_000_003])]
    assert _episodes(tmp_path / "out" / "results.json") == before
    assert again["BabyAI-GoToLocal-v0"]["oracle"]["successes"] == first["BabyAI-GoToLocal-v0"]["oracle"]["successes"]

    # the same output directory with another step limit: refused, naming what differs, nothing run
    ran.clear()
    with pytest.raises(ValueError, match=r"flat-0000000.json holds episodes run with other settings \(max_steps\)"):
        evaluate(**{**args, "agent": agent(max_steps=4)})
    assert ran == []
    # ... or run again and replaced, when asked
    evaluate(**{**args, "agent": agent(max_steps=4)}, stale="replace")
    assert len(ran) == 4
    evaluate(**{**args, "agent": agent(max_steps=4)})  # now they are the chunks of these settings
    assert len(ran) == 4
    # a chunk written before a setting existed counts as run with that setting's default
    path = tmp_path / "out" / "episodes" / "BabyAI-GoToLocal-v0" / "flat-0000000.json"
    saved = json.loads(path.read_text())
    assert saved["settings"].pop("commit") == 1
    path.write_text(json.dumps(saved))
    evaluate(**{**args, "agent": agent(max_steps=4)})
    assert len(ran) == 4
    with pytest.raises(ValueError, match=r"other settings \(commit\)"):  # ... not as run with another value
        evaluate(**{**args, "agent": agent(max_steps=4, commit=2)})


def test_evaluate_with_two_workers_decides_every_episode_as_one_process_does(wm, tmp_path):
    save_world_model(wm, tmp_path / "wm")
    args = dict(world_model=str(tmp_path / "wm"), levels=["BabyAI-GoToLocal-v0"], modes=["flat", "oracle"],
                episodes=4, num_envs=2, agent=agent(max_steps=6))
    evaluate(**args, out=str(tmp_path / "one"))
    evaluate(**args, out=str(tmp_path / "two"), workers=2)
    one, two = _episodes(tmp_path / "one" / "results.json"), _episodes(tmp_path / "two" / "results.json")
    assert len(one) == 8 and one == two
    from PIL import Image

    for mode in ("flat", "oracle"):  # the frames the agents saw, i.e. the actions they took
        for k in range(2):
            name = f"plots/BabyAI-GoToLocal-v0-{mode}-episode{k}.png"
            assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / name)),
                                  np.asarray(Image.open(tmp_path / "two" / name))), name


def test_subgoals_are_drawn_as_the_nearest_state_of_the_layout(wm):
    from thinkjepa.data.collect import WaypointFrames
    from thinkjepa.policy.evaluate import nearest_layout_states

    level, seed = "BabyAI-GoToLocal-v0", 7
    env = make_env(level, image_size=64)
    env.reset(seed=seed)
    labeler = WaypointFrames(env)
    waypoint = labeler.frames[labeler.label()]  # the oracle's subgoal: a state of this very layout
    env.close()
    z_waypoint = wm.target_encode(torch.as_tensor(waypoint[None]))
    far = z_waypoint + 5.0  # a latent no state of the layout has
    renders, gaps = nearest_layout_states(wm, level, seed, 64, torch.cat([z_waypoint, far]))
    # the waypoint's own render, at the distance batching leaves between two encodings of one frame
    assert np.array_equal(renders[0], waypoint) and gaps[0] < 1e-2
    assert gaps[1] > 1.0


def test_length_bins_and_success_by_length():
    assert length_bins([]) == []
    bins = length_bins([1, 2, 2, 3, 5, 8, 9, 20], bins=4)
    assert bins[0][0] == 1 and bins[-1][1] == 20
    assert all(lo <= hi for lo, hi in bins) and all(a[1] + 1 == b[0] for a, b in zip(bins, bins[1:]))
    results = [EpisodeResult("L", m, s, "go", ok, 5, n) for s, (m, ok, n) in enumerate(
        [("flat", True, 2), ("flat", False, 9), ("bot", True, 2), ("bot", True, 9), ("flat", True, 0)])]
    ranges, table = success_by_length(results, "L", bins=2)
    assert ranges == [(2, 6), (7, 9)] and table == {"bot": [(1, 1), (1, 1)], "flat": [(1, 1), (0, 1)]}


def test_evaluate_rejects_bad_input_before_compute(wm, tmp_path):
    save_world_model(wm, tmp_path / "wm")
    with pytest.raises(ValueError, match="needs --thinker"):
        evaluate(world_model=str(tmp_path / "wm"), modes=["hierarchical"], out=str(tmp_path / "o"))
    with pytest.raises(ValueError, match=r"unknown modes \['flta'\]"):
        evaluate(world_model=str(tmp_path / "wm"), modes=["flta"], out=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="image_size=64 gives 2px tiles"):
        evaluate(world_model=str(tmp_path / "wm"), levels=["BabyAI-GoTo-v0"], modes=["flat"], out=str(tmp_path / "o"))


def test_wilson_interval():
    lo, hi = wilson_interval(80, 100)
    assert 0.71 < lo < 0.72 and 0.86 < hi < 0.87
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_oracle_gap_keeps_subgoals_within_reach():
    from thinkjepa.data.collect import WaypointFrames

    env = make_env("BabyAI-GoTo-v0", image_size=88)
    checked = 0
    for seed in range(20):
        env.reset(seed=seed)
        here = env.unwrapped.agent_pos
        far, near = WaypointFrames(env), WaypointFrames(env, max_gap=3)
        a, b = far.states[far.label()], near.states[near.label()]
        cells_a, cells_b = (abs(s[0] - here[0]) + abs(s[1] - here[1]) for s in (a, b))
        assert cells_b <= 3 and cells_b <= cells_a
        checked += cells_a > 3  # the natural waypoint (door crossing or target) lies further away
    env.close()
    assert checked >= 5


@pytest.mark.parametrize("recipe", sorted(str(p) for p in (Path(__file__).resolve().parents[2] / "recipes/eval").glob("*.yaml")))
def test_eval_recipes_parse(recipe, capsys):
    from thinkjepa.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--config", recipe, "--world_model", "wm", "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "BabyAI-GoTo-v0" in capsys.readouterr().out


def test_a_subgoal_sheet_that_cannot_be_drawn_falls_back_to_the_frames(wm, monkeypatch):
    import thinkjepa.policy.evaluate as ev
    import thinkjepa.policy.rollout as rollout

    def broken(*args, **kwargs):
        raise RuntimeError("no renderer")

    monkeypatch.setattr(rollout, "subgoal_picture", broken)
    demos = [ev.demonstrate("BabyAI-GoToLocal-v0", s, 64) for s in range(2)]
    oracle = OracleSubgoals(wm)
    policy = HierarchicalPolicy(wm, oracle, planner(), SPACE, reach_threshold=0.1)
    results, pictures = run_episodes(policy, "oracle", "BabyAI-GoToLocal-v0", demos, 64, max_steps=2, keep_frames=1,
                                     attach=oracle.attach)
    assert len(results) == 2 and all(r.error is None for r in results)
    assert pictures[0].shape == (64 + 14, 3 * 64 + 2 * 4, 3)  # the 3 frames (start + 2 steps) in a row


def test_evaluate_leaves_autograd_as_it_found_it(wm, tmp_path):
    save_world_model(wm, tmp_path / "wm")
    assert torch.is_grad_enabled()
    evaluate(world_model=str(tmp_path / "wm"), levels=["BabyAI-GoToLocal-v0"], modes=["bot"], episodes=1,
             out=str(tmp_path / "out"))
    assert torch.is_grad_enabled()


def test_agent_settings_name_a_mistyped_key_and_a_bad_value(tmp_path):
    with pytest.raises(ValueError, match=r"x\.yaml: unknown AgentSettings keys \['snap_dept'\]; known: .*'snap_depth'"):
        AgentSettings.from_dict({"snap_dept": 3}, source="x.yaml")
    with pytest.raises(ValueError, match="snap_depth must be >= 0"):
        AgentSettings(snap_depth=-1)
    with pytest.raises(ValueError, match="snap_metric must be 'l2' or 'cost', got 'geodesic'"):
        AgentSettings(snap_metric="geodesic")
    with pytest.raises(ValueError, match="snap_max_gap must be > 0 and excludes follow_paths"):
        AgentSettings(snap_depth=8, follow_paths=True, snap_max_gap=2.0)
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("levels: [BabyAI-GoTo-v0]\nagent:\n  snap_depth: 8\n  cost: {distance: latent}\n")
    settings = AgentSettings.from_eval_recipe(recipe, patience=7)
    assert (settings.level, settings.snap_depth, settings.patience, settings.cost) == (
        "BabyAI-GoTo-v0", 8, 7, {"distance": "latent"})


def test_summary_compares_each_success_with_the_bot_on_the_same_seed():
    def result(seed: int, success: bool, steps: int, expert: int) -> EpisodeResult:
        return EpisodeResult("L", "hierarchical", seed, "m", success, steps, expert)

    from thinkjepa.policy.stats import markdown_table, summarize

    s = summarize([result(0, True, 30, 20), result(1, True, 10, 10), result(2, False, 128, 5)])
    assert s["mean_length"] == 20 and s["length_vs_expert"] == pytest.approx((1.5 + 1.0) / 2)
    assert "20.0 (1.25x the bot)" in markdown_table({"L": {"hierarchical": s}})
    assert summarize([result(0, False, 128, 20)])["length_vs_expert"] is None


def test_a_released_agent_refuses_missions_its_level_never_uses_and_the_rest_of_the_batch_runs(wm):
    from thinkjepa.envs.babyai import check_mission
    from thinkjepa.policy.stats import summarize

    check_mission("go to a purple key", "BabyAI-GoToLocal-v0")  # the level's grammar: taken
    with pytest.raises(ValueError, match=r"\['door'\], words no mission of BabyAI-GoToLocal-v0 uses"):
        check_mission("go to the red door", "BabyAI-GoToLocal-v0")
    with pytest.raises(ValueError, match=r"\[',', 'then'\]"):
        check_mission("go to the red ball, then go to a box", "BabyAI-GoToLocal-v0")

    obs = frames(1)
    policy = HierarchicalPolicy(wm, FixedSubgoal(wm.target_encode(torch.as_tensor(obs))), planner(), SPACE)
    policy.reset("go to the red door")  # an agent of one's own (built for no level) is not checked
    policy.built_for = "BabyAI-GoToLocal-v0"
    assert policy.refusal(EpisodeStart("go to the red ball")) is None
    assert "['on', 'right', 'your']" in policy.refusal(EpisodeStart("go to the red ball on your right"))
    with pytest.raises(ValueError, match="door"):
        policy.reset("go to the red door")

    missions = ["go to the red ball", "go to the red door", "go to a grey key"]
    demos = [Demo(s, m, True, 5, obs[0], None) for s, m in enumerate(missions)]
    results, _ = run_episodes(policy, "hierarchical", "BabyAI-GoToLocal-v0", demos, 64, max_steps=3)
    assert [r.seed for r in results] == [0, 1, 2]
    assert results[1].error.startswith("refused: ") and "door" in results[1].error and results[1].steps == 0
    assert results[0].error is None and results[2].error is None and results[0].steps >= 1
    summary = summarize(results)
    assert summary["refused"] == 1 and summary["errored"] == 1 and summary["episodes"] == 3


def test_a_release_evaluation_builds_agents_that_refuse_what_the_release_was_not_built_for(wm):
    from thinkjepa.policy.chunks import ChunkRunner

    runner = ChunkRunner(wm, None, agent(reach_threshold=1.0), built_for="BabyAI-GoToLocal-v0")
    oracle, flat = runner.policy("oracle", 1.0, 0), runner.policy("flat", 1.0, 0)
    assert oracle.built_for == flat.built_for == "BabyAI-GoToLocal-v0"
    here = EpisodeStart("go to the red door", frames(1)[0], "BabyAI-GoToLocal-v0")
    assert oracle.refusal(here) is None and flat.refusal(here) is None  # neither reads the instruction
    there = EpisodeStart("go to the red ball", frames(1)[0], "BabyAI-GoTo-v0")
    assert "22x22 grid" in oracle.refusal(there) and "22x22 grid" in flat.refusal(there)
    assert ChunkRunner(wm, None, agent(reach_threshold=1.0)).policy("flat", 1.0, 0).built_for is None

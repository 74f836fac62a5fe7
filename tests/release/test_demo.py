"""`make demo` at a tiny size: the released agent first (table and subgoal sheets), then every training
stage of the pipeline and its evaluation."""

from __future__ import annotations

from release_helpers import make_release

from thinkjepa.demo import demo


def test_the_demo_shows_the_release_then_trains_every_stage(tmp_path, parts, monkeypatch, capsys) -> None:
    monkeypatch.setenv("THINKJEPA_NUM_THREADS", "1")
    root = tmp_path / "releases"
    make_release(root, parts, name="babyai-gotolocal")  # no babyai-goto here: "auto" shows this one
    out = tmp_path / "demo"
    result = demo(out=str(out), release="auto", release_root=str(root), release_episodes=2, goto_local_episodes=10,
                  goto_episodes=10, explore_episodes=6, wm_steps=2, predictor_steps=2, thinker_steps=2, eval_episodes=2,
                  eval_workers=1, eval_max_steps=4)
    printed = capsys.readouterr().out
    level = "BabyAI-GoToLocal-v0"  # the tiny release's settings were chosen there
    assert set(result["release"][level]) == {"bot", "flat", "hierarchical"}
    assert all(s["episodes"] == 2 for s in result["release"][level].values())
    assert (out / "release" / "table.md").is_file() and (out / "eval" / "table.md").is_file()
    assert any((out / "release" / "plots").glob("*hierarchical-episode0.png")), "no subgoal sheet drawn"
    for stage in ("wm", "wm-stage2", "thinker"):
        assert any((out / stage).rglob("config.json")), f"the {stage} stage exported nothing"
    assert set(result["tiny"]) == {level, "BabyAI-GoTo-v0"}
    assert printed.index("0/4 the released agent 'babyai-gotolocal'") < printed.index("1/4 collecting")
    assert str(out / "release" / "plots") in printed


def test_a_clone_without_the_release_says_so_and_goes_on(tmp_path, capsys) -> None:
    from thinkjepa.demo import show_release

    assert show_release("babyai-goto", 2, tmp_path / "out", 1, root=str(tmp_path)) is None
    assert "cannot be shown: no release 'babyai-goto'" in capsys.readouterr().out
    assert show_release("auto", 2, tmp_path / "out", 1, root=str(tmp_path)) is None
    printed = capsys.readouterr().out  # both candidates, each with its reason
    assert "no release 'babyai-goto'" in printed and "no release 'babyai-gotolocal'" in printed

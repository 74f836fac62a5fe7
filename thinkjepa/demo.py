"""``make demo``: the released GoTo agent at work, then the whole pipeline at tiny scale on a laptop CPU.

    python -m thinkjepa.demo [--out checkpoints/demo] [--release_episodes 20] [--wm_steps 300] ...

0. the released agent (``checkpoints/release/babyai-goto``, or ``babyai-gotolocal`` while GoTo's is not
   assembled; loaded by name, hashes checked): the bot, the flat agent and the hierarchical agent on fresh
   seeded episodes of the level its settings were measured on; the table is printed and subgoal
   sheets are drawn (``<out>/release/plots``). A clone whose release is not built yet says so and goes on;
1. collect BabyAI bot episodes (GoToLocal and GoTo, full-grid frames, subgoal labels), plus a second,
   larger, exploratory GoToLocal set for the predictor;
2. train the JEPA world model: stage 1 (recipes/wm/babyai-tiny.yaml, fewer steps), then stage 2, the
   predictor on frozen encoder latents (recipes/predictor/babyai-tiny.yaml, fewer steps);
3. LoRA-finetune the thinker against it (recipes/thinker/babyai-tiny.yaml, fewer steps);
4. evaluate bot / flat / hierarchical / oracle side by side and print the table.

Each stage reuses its output when it already exists, so an interrupted demo picks up where it
stopped (evaluation chunks included); ``--fresh true`` starts over. The numbers are a smoke-scale run, not the project's
results: those come from the full recipes (see the README).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from thinkjepa.cli import train
from thinkjepa.release.build import run_dir_args

ROOT = Path(__file__).resolve().parents[1]


def _lightning_args(recipe: str, run_dir: Path, steps: int) -> list[str]:
    return ["fit", "--config", str(ROOT / recipe), f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
            *run_dir_args(run_dir), f"--trainer.callbacks.init_args.every_n_train_steps={steps}"]


SHOWN = ("babyai-goto", "babyai-gotolocal")
"""The releases ``release="auto"`` shows, in order of preference: the first whose agent is assembled."""


def show_release(name: str, episodes: int, out: Path, workers: int, root: str | None = None) -> dict | None:
    """Evaluate a released agent on ``episodes`` fresh seeds (4,000,000+), or say why it cannot be shown.
    ``name="auto"``: the first of :data:`SHOWN` that is assembled."""
    from thinkjepa.policy.release_eval import evaluate_release
    from thinkjepa.release import Release, ReleaseError

    reasons = []
    for candidate in SHOWN if name == "auto" else (name,):
        try:
            release = Release.open(candidate, root=root)
            release.agent  # noqa: B018 - an unfinished chain is an error naming the stages done
            name = candidate
            break
        except ReleaseError as err:
            reasons.append(str(err))
    else:
        print("\nThe released agent cannot be shown: " + "; ".join(reasons)
              + "\n(`make release-goto` builds it; the tiny pipeline follows.)")
        return None
    level = release.agent["settings"]["level"]
    print(f"\n== 0/4 the released agent {name!r}: bot / flat / hierarchical on {episodes} fresh {level} episodes ==")
    print(release.manifest.get("description", ""))
    return evaluate_release(name, episodes=episodes, out=str(out), workers=workers, num_envs=min(episodes, 20), root=root)


def demo(
    out: str = "checkpoints/demo",
    release: str | None = "auto",
    release_episodes: int = 20,
    release_root: str | None = None,
    goto_local_episodes: int = 600,
    goto_episodes: int = 120,
    explore_episodes: int = 3000,
    wm_steps: int = 300,
    predictor_steps: int = 1000,
    thinker_steps: int = 300,
    eval_episodes: int = 20,
    eval_workers: int = 2,
    eval_max_steps: int = 96,
    fresh: bool = False,
) -> dict:
    """Run the demo pipeline.

    Args:
        out: Directory for the data, checkpoints and results.
        goto_local_episodes: Bot episodes collected on BabyAI-GoToLocal-v0.
        goto_episodes: Bot episodes collected on BabyAI-GoTo-v0.
        explore_episodes: Extra exploratory GoToLocal episodes (half the actions random) for the
            predictor (stage 2).
        wm_steps: World-model training steps (stage 1).
        predictor_steps: Predictor training steps on frozen latents (stage 2).
        thinker_steps: Thinker finetuning steps.
        eval_episodes: Evaluation episodes per level.
        eval_workers: Processes the evaluation runs episodes in (one torch thread each).
        eval_max_steps: Step limit of the tiny pipeline's evaluated episodes.
        fresh: Delete ``out`` first.
        release: The released agent shown first (``"auto"``: ``babyai-goto``, or ``babyai-gotolocal`` while the
            former is not assembled; ``None``: skip it).
        release_episodes: Its episodes per agent (fresh seeds 4,000,000+).
        release_root: Where releases live (default ``checkpoints/release``).
    """
    from thinkjepa.data.collect import collect
    from thinkjepa.policy.evaluate import evaluate
    from thinkjepa.policy.settings import AgentSettings

    base = Path(out)
    if fresh and base.exists():
        shutil.rmtree(base)
    data, explore, thinker_dir = base / "data", base / "data-explore", base / "thinker"
    wm_dir, predictor_dir = base / "wm", base / "wm-stage2"
    timings = {}

    start = time.perf_counter()
    released = show_release(release, release_episodes, base / "release", eval_workers, release_root) if release else None
    timings["released agent"] = time.perf_counter() - start

    start = time.perf_counter()
    if not (data / "episodes.json").is_file():
        print("\n== 1/4 collecting BabyAI bot episodes ==")
        collect(["BabyAI-GoToLocal-v0", "BabyAI-GoTo-v0"], [goto_local_episodes, goto_episodes], str(data),
                image_size=88, epsilon=0.2, seed=0, overwrite=True)
    if not (explore / "episodes.json").is_file():
        collect(["BabyAI-GoToLocal-v0"], explore_episodes, str(explore), image_size=88, epsilon=0.5, seed=200_000,
                overwrite=True)
    timings["collect"] = time.perf_counter() - start

    start = time.perf_counter()
    if not (wm_dir / "world_model" / "config.json").is_file():
        print("\n== 2/4 training the JEPA world model ==")
        train([*_lightning_args("recipes/wm/babyai-tiny.yaml", wm_dir, wm_steps), f"--data.init_args.root={data}"])
    world_model = predictor_dir / "world_model"
    if not (world_model / "config.json").is_file():
        print("\n== 2/4 fitting the predictor on frozen encoder latents ==")
        train([*_lightning_args("recipes/predictor/babyai-tiny.yaml", predictor_dir, predictor_steps),
               f"--model.init_args.world_model={wm_dir / 'world_model'}", f"--data.init_args.roots=[{data},{explore}]"])
    timings["world model"] = time.perf_counter() - start

    start = time.perf_counter()
    if not (thinker_dir / "thinker").is_dir():
        print("\n== 3/4 finetuning the thinker (LoRA) ==")
        train([*_lightning_args("recipes/thinker/babyai-tiny.yaml", thinker_dir, thinker_steps),
               f"--model.init_args.world_model={world_model}", f"--data.init_args.root={data}"])
    timings["thinker"] = time.perf_counter() - start

    start = time.perf_counter()
    print("\n== 4/4 evaluating bot / flat / hierarchical / oracle ==")
    # finished chunks of an interrupted evaluation are reused; those of other models or settings rerun
    summary = evaluate(world_model=str(world_model), thinker=str(thinker_dir / "thinker"), episodes=eval_episodes,
                       agent=AgentSettings(max_steps=eval_max_steps), num_envs=10, out=str(base / "eval"),
                       log_episodes=2, workers=eval_workers, stale="replace")
    timings["evaluate"] = time.perf_counter() - start
    print("\nwall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
    if released is not None:
        print(f"the released agent: {base / 'release' / 'table.md'}, subgoal sheets in {base / 'release' / 'plots'}")
    print(f"the tiny pipeline: {base / 'eval' / 'table.md'}, pictures in {base / 'eval' / 'plots'}; "
          f"TensorBoard: tensorboard --logdir {base}")
    return {"release": released, "tiny": summary}


def main() -> None:
    from jsonargparse import auto_cli

    from thinkjepa.cli import configure_threads, quiet_output

    configure_threads()
    quiet_output()
    auto_cli(demo, as_positional=False)


if __name__ == "__main__":
    main()

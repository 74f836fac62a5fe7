"""Build a release from nothing, one committed stage at a time.

    thinkjepa release build recipes/release/babyai-goto.yaml [--cpu true] [--commit true] [--until STAGE]
    thinkjepa release status babyai-goto
    thinkjepa release park babyai-goto wm-stage1      # keep an unfinished stage's checkpoint to commit it

A release recipe (``recipes/release/*.yaml``) lists the chain's stages in order — data collection and
training recipes, and which earlier stage's export each one reads — then the agent: which exports it is
made of and the evaluation recipe whose planner, cost and snapping it uses. ``build`` runs what is not
done yet. Each finished stage's export is copied into the release (``stages/<stage>/``) with its record
(recipe, overrides, commit, wall time, hardware and peak resident memory of every run segment), so a
rebuild interrupted here carries on elsewhere from the last committed stage. A training stage resumes
from its run's ``last.ckpt`` or from one parked in the release (``resume/<stage>/``), which leaves the
tree when the stage's export is in. When the last stage is done, the agent is assembled: its reach
threshold is calibrated on bot episodes no evaluation uses, and the intermediate exports are pruned.

A stage whose recipe asks for a GPU refuses to start without one unless ``cpu=True``, which applies the
stage's ``cpu_args`` (the documented CPU fallback, e.g. fewer steps and no data-loader workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.release.manifest import REPO, Release, ReleaseError, git_commit, now, release_root

EXPORTS = ("world_model", "thinker", "vlm")  # what a training stage writes into its run directory
SEGMENTS = "segments.json"


@dataclass(frozen=True)
class Stage:
    """One step of a release's chain.

    Args:
        name: The stage's name in the release (``stages/<name>``).
        fit: A training recipe (``thinkjepa fit --config``), or
        collect: a data recipe (``thinkjepa collect --config``; data is regenerated, never released).
        inputs: ``{config key: earlier stage}``: the key is set to that stage's export.
        args: Overrides always passed to the recipe.
        cpu_args: Overrides that run a GPU recipe on a CPU (``build(cpu=True)``).
        reuse: Another release whose finished stage of the same name is taken instead of training.
        variant_of: An earlier stage this one is an alternative to (e.g. the thinker with LoRA adapters beside
            the fully finetuned one): it trains only when named in ``build(only=...)``, takes the same place
            in the chain, and its record (wall time, memory, validation metrics) sits beside the other's. The
            agent is made of whichever one ``agent`` names.
        keep: The export stays in the release when the agent is assembled (a part users load beside the agent,
            e.g. the grounded VLM that guides a guided predictor), where other intermediate exports are pruned.
    """

    name: str
    fit: str | None = None
    collect: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    cpu_args: list[str] = field(default_factory=list)
    reuse: str | None = None
    variant_of: str | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        if (self.fit is None) == (self.collect is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of fit (a training recipe) or collect (a data recipe)")

    @property
    def recipe(self) -> str:
        return self.fit or self.collect  # type: ignore[return-value]


@dataclass(frozen=True)
class ReleaseRecipe:
    """A release's chain and agent, as written in ``recipes/release/<name>.yaml``."""

    name: str
    stages: list[Stage]
    agent: dict[str, Any]
    description: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReleaseRecipe:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
            stages = [Stage(**s) for s in raw.pop("stages")]
            recipe = cls(stages=stages, **raw)
        except (TypeError, KeyError) as err:
            raise ValueError(f"{path}: not a release recipe ({err})") from err
        names = [s.name for s in stages]
        for s in stages:
            for key, source in s.inputs.items():
                if source not in names[: names.index(s.name)]:
                    raise ValueError(f"{path}: stage {s.name!r} reads {key} from {source!r}, which is not an earlier stage")
            if not (REPO / s.recipe).is_file():
                raise ValueError(f"{path}: stage {s.name!r}: recipe {s.recipe} does not exist")
            if s.variant_of is not None and s.variant_of not in names[: names.index(s.name)]:
                raise ValueError(f"{path}: stage {s.name!r} is a variant of {s.variant_of!r}, which is not an earlier stage")
        for part in ("world_model", "thinker"):
            if recipe.agent.get(part) not in (*names, None):
                raise ValueError(f"{path}: agent.{part} names {recipe.agent.get(part)!r}, which is not a stage")
        return recipe


def hardware() -> str:
    """The CPU model and the cores this process may use, and the GPU when there is one."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = f"{model}, {cores} cores"
    import torch

    if torch.cuda.is_available():
        out += f", {torch.cuda.get_device_name(0)}"
    return out


def _peak_rss_mb(pid: int) -> float:
    """The largest resident high-water mark among ``pid`` and its descendants (MiB; 0 once gone)."""
    peak, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return peak


def run_measured(cmd: list[str], log: Path, segments_file: Path | None = None, heartbeat: float = 30.0) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log``), measuring wall time and peak resident memory.

    With ``segments_file`` the segment is rewritten there every ``heartbeat`` seconds, so a run that is
    killed still leaves how long it ran and how much memory it took.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(segments_file.read_text()) if segments_file and segments_file.is_file() else []
    segment = {"started": now(), "wall_seconds": 0.0, "peak_rss_mb": 0.0, "hardware": hardware(),
               "command": cmd[2:], "returncode": None}
    start = last_write = time.monotonic()
    # one torch thread unless told otherwise: the chain's small models run several times slower on more threads
    # of a few shared cores (as the Makefile sets it)
    env = {**os.environ, "THINKJEPA_NUM_THREADS": os.environ.get("THINKJEPA_NUM_THREADS") or "1"}
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(heartbeat, 5.0))
            segment["peak_rss_mb"] = round(max(segment["peak_rss_mb"], _peak_rss_mb(proc.pid)), 1)
            segment["wall_seconds"] = round(time.monotonic() - start, 1)
            if proc.returncode is not None:
                break
            if segments_file and time.monotonic() - last_write >= heartbeat:
                atomic_write_text(segments_file, json.dumps([*previous, segment], indent=1))
                last_write = time.monotonic()
    # the child's own accounting catches a peak between two polls
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    segment["peak_rss_mb"] = round(max(segment["peak_rss_mb"], children), 1)
    segment["returncode"] = proc.returncode
    if segments_file:
        atomic_write_text(segments_file, json.dumps([*previous, segment], indent=1))
    return segment


def _in_repo(path: Path) -> Path:
    """``path`` relative to the repository when it lies inside it (stages run there): records that read the
    same on every machine."""
    path = Path(path).resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def run_dir_args(run_dir: Path) -> list[str]:
    """Overrides that put a LightningCLI recipe's checkpoints, logs and export under ``run_dir``."""
    return [f"--trainer.default_root_dir={run_dir}",
            f"--trainer.logger.init_args.save_dir={run_dir.parent}", f"--trainer.logger.init_args.name={run_dir.name}",
            f"--trainer.callbacks.init_args.dirpath={run_dir}/checkpoints"]


def _wants_gpu(recipe: str) -> bool:
    trainer = (yaml.safe_load((REPO / recipe).read_text()) or {}).get("trainer", {})
    return trainer.get("accelerator") in ("gpu", "cuda")


def _commit(release: Release, message: str, attempts: int = 30) -> None:
    """Commit the release directory alone; waits out another git process holding the index (two builds, or
    someone working in the tree) instead of losing a finished stage to ``index.lock``."""
    rel = os.path.relpath(release.path, REPO)
    for attempt in range(attempts):
        for command in (["git", "add", "-A", "--", rel], ["git", "commit", "-q", "-m", message, "--", rel]):
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            if result.returncode:
                break
        else:
            return
        if "index.lock" not in result.stderr or attempt == attempts - 1:
            raise ReleaseError(f"git could not commit {rel}: {result.stderr.strip()}")
        time.sleep(2.0)


def _data_dir(stage: Stage) -> str | None:
    """Where a collect stage writes its episodes (its ``--out=`` override, else the data recipe's ``out``)."""
    return next((a.split("=", 1)[1] for a in stage.args if a.startswith("--out=")),
                (yaml.safe_load((REPO / stage.collect).read_text()) or {}).get("out"))


def _collected(stage: Stage) -> bool:
    out = _data_dir(stage)
    return bool(out) and (REPO / out / "episodes.json").is_file()


def collect(stage: Stage, log: Path) -> dict[str, Any]:
    """Run a collect stage's data recipe (seeded: the same episodes on any machine); its measured segment."""
    segment = run_measured([sys.executable, "-m", "thinkjepa.cli", "collect", "--config", stage.collect, *stage.args], log)
    if segment["returncode"] != 0:
        raise RuntimeError(f"stage {stage.name!r} failed (exit {segment['returncode']}); see {log}")
    return segment


def run_stage(release: Release, stage: Stage, work: Path, cpu: bool, gpu: bool = False) -> None:
    """Run one stage and publish it into ``release`` (raises with the log's path if it fails)."""
    log = work / f"{stage.name}.log"
    py = [sys.executable, "-m", "thinkjepa.cli"]
    base = {"recipe": stage.recipe, "commit": git_commit()}
    if stage.collect:
        if _collected(stage):
            print(f"[{release.name}] {stage.name}: {_data_dir(stage)} is already collected")
            release.publish_stage(stage.name, {**base, "kind": "collect", "segments": [], "note": "data already there"})
            return
        segment = collect(stage, log)
        release.publish_stage(stage.name, {**base, "kind": "collect", "args": stage.args, "segments": [segment]})
        return

    run_dir = work / stage.name
    args = [f"--{key}={_in_repo(release.stage_export(source))}" for key, source in stage.inputs.items()]
    args += list(stage.args)
    wants_gpu = _wants_gpu(stage.recipe)
    if gpu and not wants_gpu:
        args += ["--trainer.accelerator=gpu", "--trainer.devices=1"]
    elif wants_gpu:
        import torch

        if cpu:
            args += stage.cpu_args
        elif not torch.cuda.is_available():
            raise ReleaseError(f"stage {stage.name!r} ({stage.recipe}) trains on a GPU and there is none here; "
                               f"build with --cpu true to run it on the CPU instead ({' '.join(stage.cpu_args)})")
    resume = run_dir / "checkpoints" / "last.ckpt"
    parked = release.path / "resume" / stage.name / "last.ckpt"
    segments_file = run_dir / SEGMENTS
    if not resume.is_file() and parked.is_file():
        resume = parked
        if not segments_file.is_file():
            atomic_write_text(segments_file, json.dumps((release.stage(stage.name) or {}).get("segments", []), indent=1))
    resume_args = [f"--ckpt_path={_in_repo(resume)}"] if resume.is_file() else []
    print(f"[{release.name}] {stage.name}: {stage.recipe}{' (resumed from ' + str(resume) + ')' if resume_args else ''}; "
          f"log {log}", flush=True)
    segment = run_measured([*py, "fit", "--config", stage.recipe, *run_dir_args(_in_repo(run_dir)), *args, *resume_args],
                           log, segments_file)
    if segment["returncode"] != 0:
        raise RuntimeError(f"stage {stage.name!r} failed (exit {segment['returncode']}); see {log}")
    started = time.time() - segment["wall_seconds"]
    exports = [run_dir / e for e in EXPORTS if (run_dir / e).is_dir() and (run_dir / e).stat().st_mtime >= started]
    if not exports:  # Lightning ends a run it was asked to stop (SIGTERM) with status 0 and no export
        raise RuntimeError(f"stage {stage.name!r} stopped before its end (no export in {run_dir}); build again to "
                           f"resume it from {run_dir / 'checkpoints' / 'last.ckpt'}, or park it to carry it elsewhere")
    if len(exports) != 1:
        raise ReleaseError(f"stage {stage.name!r}: expected one export ({', '.join(EXPORTS)}) in {run_dir}, "
                           f"found {[e.name for e in exports]}")
    segments = json.loads(segments_file.read_text())
    record = {**base, "kind": "fit", "args": args, "segments": segments}
    if validation := last_validation(run_dir):
        record["validation"] = validation
    release.publish_stage(stage.name, record, exports[0])


def last_validation(run_dir: Path) -> dict[str, Any]:
    """The last value of every validation metric a run logged to TensorBoard (``val/...``), with its step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, Any] = {}
    for events in sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("val/") or tag.startswith("val_"):
                last = max(acc.Scalars(tag), key=lambda e: (e.step, e.wall_time))
                if tag not in out or last.step >= out[tag]["step"]:
                    out[tag] = {"value": round(float(last.value), 6), "step": int(last.step)}
    return dict(sorted(out.items()))


def _agent_parts(recipe: ReleaseRecipe) -> tuple[str, ...]:
    return tuple(p for p in (recipe.agent["world_model"], recipe.agent.get("thinker")) if p)


def recipe_settings(recipe: ReleaseRecipe):
    """The agent settings a release recipe asks for: its eval recipe's ``agent`` block and ``agent.settings``."""
    from thinkjepa.policy.settings import AgentSettings

    return AgentSettings.from_eval_recipe(REPO / recipe.agent["eval"], **recipe.agent.get("settings", {}))


def assemble(release: Release, recipe: ReleaseRecipe) -> None:
    """Make the agent from the finished chain: parts, settings with a calibrated reach threshold, pruning."""
    from thinkjepa.policy.demos import calibrated_threshold
    from thinkjepa.policy.settings import AgentSettings
    from thinkjepa.worldmodel.export import load_world_model

    agent = recipe.agent
    settings = recipe_settings(recipe)
    if settings.reach_threshold is None:
        wm = load_world_model(release.stage_export(agent["world_model"]))
        threshold = calibrated_threshold(wm, settings.level, int(agent.get("calibration_episodes", 100)))
        settings = AgentSettings.from_dict({**settings.to_dict(), "reach_threshold": round(threshold, 4)})
    prune = [s.name for s in recipe.stages if s.fit and not s.keep and s.name not in _agent_parts(recipe)
             and release.stage_done(s.name)]
    release.assemble(agent["world_model"], agent.get("thinker"), settings.to_dict(), prune=prune)


def build(recipe: str, root: str | None = None, cpu: bool = False, gpu: bool = False, commit: bool = False,
          until: str | None = None, only: list[str] | None = None, work: str = "checkpoints/build") -> Release:
    """Run every stage of a release recipe that is not done yet, then assemble the agent.

    Args:
        recipe: A release recipe, ``recipes/release/<name>.yaml``.
        root: Where releases live (default ``checkpoints/release``).
        cpu: Run GPU stages on the CPU with their ``cpu_args``.
        gpu: Run every training stage on one GPU, CPU recipes included (a machine with a GPU for a short time).
        commit: ``git commit`` the release directory after each stage (for long unattended rebuilds).
        until: Stop after this stage.
        only: Run just these stages (their inputs must be done): a second chain beside the first, e.g. the
            thinker's VLM pretraining while the world model trains (``--only '[vlm-grounding, vlm-router]'``).
        work: Where training runs write their checkpoints and logs (git-ignored).
    """
    if cpu and gpu:
        raise ValueError("build: cpu and gpu exclude each other")
    spec = ReleaseRecipe.load(recipe)
    base = Path(root or release_root())
    try:
        release = Release.open(spec.name, root=base)
    except ReleaseError:
        if (base / spec.name / "MANIFEST.json").exists():
            raise
        release = Release.create(spec.name, root=base, description=spec.description)
        release.manifest["recipe"] = str(recipe)
        release.save()
    work_dir = REPO / work / spec.name
    names = [s.name for s in spec.stages]
    for given in [until, *(only or [])]:
        if given is not None and given not in names:
            raise ValueError(f"{given!r} is not a stage of {recipe} ({', '.join(names)})")
    def asked(stage: Stage) -> bool:  # named in only; without only, every stage but variants the agent does not use
        return stage.name in only if only is not None else not stage.variant_of or stage.name in _agent_parts(spec)

    for i, stage in enumerate(spec.stages):
        if release.stage_done(stage.name):
            later = [s for s in spec.stages[i + 1:] if s.fit and not release.stage_done(s.name) and asked(s)]
            if stage.collect and later and not _collected(stage):
                # data is never released: a rebuild carried to another machine collects it again for what is left
                print(f"[{release.name}] {stage.name}: collecting {_data_dir(stage)} again for "
                      f"{', '.join(s.name for s in later)} (released stages keep no data)", flush=True)
                collect(stage, work_dir / f"{stage.name}.log")
            continue
        if not asked(stage):
            continue
        if stage.reuse:
            other = Release.open(stage.reuse, root=base)
            if other.stage_done(stage.name) and other.stage(stage.name).get("export", "").startswith("stages/"):
                record = {**other.stage(stage.name), "reused_from": stage.reuse}
                release.publish_stage(stage.name, record, other.stage_export(stage.name))
                print(f"[{release.name}] {stage.name}: taken from release {stage.reuse!r}")
                continue
        run_stage(release, stage, work_dir, cpu, gpu)
        if commit:
            wall = sum(s["wall_seconds"] for s in release.stage(stage.name).get("segments", []))
            _commit(release, f"Release {release.name}: stage {stage.name} ({stage.recipe}, {wall / 60:.0f} min)")
        if stage.name == until:
            return release
    if only is None and not release.manifest.get("agent"):
        assemble(release, spec)
        if commit:
            _commit(release, f"Release {release.name}: the agent assembled from its stages")
    elif only is None and (changed := parts_changed(release, spec) + settings_changed(release, spec)):
        print(f"[{release.name}] the recipe's agent changed ({', '.join(changed)}): assembling again; "
              "the recorded evaluation is dropped (`make eval-release` measures it again)")
        assemble(release, spec)
        if commit:
            _commit(release, f"Release {release.name}: the agent assembled again from the recipe ({', '.join(changed)})")
    return release


def parts_changed(release: Release, recipe: ReleaseRecipe) -> list[str]:
    """The agent parts the release recipe takes from another stage than the assembled agent did, as
    ``"thinker: thinker-cells -> thinker-gpu"`` (a swap waits until the new stage is done)."""
    out = []
    for part in ("world_model", "thinker"):
        stage = recipe.agent.get(part)
        if not stage or not release.stage_done(stage) or release.stage(stage).get("export") == part:
            continue
        was = [name for name, record in release.manifest["stages"].items() if record.get("export") == part]
        out.append(f"{part}: {was[0] if was else 'none'} -> {stage}")
    return out


def settings_changed(release: Release, recipe: ReleaseRecipe) -> list[str]:
    """The agent settings whose value in the release recipe (its eval recipe and ``agent.settings``) differs from
    the assembled agent's; a reach threshold the recipe leaves to calibration is not compared, and a setting the
    release predates counts as its default."""
    from thinkjepa.policy.settings import AgentSettings

    wanted = recipe_settings(recipe).to_dict()
    have = AgentSettings.from_dict(release.agent["settings"]).to_dict()
    return sorted(k for k, v in wanted.items()
                  if have.get(k) != v and not (k == "reach_threshold" and v is None))


def status(name: str, root: str | None = None, markdown: bool = False) -> dict[str, Any]:
    """Each stage's state and cost, and the release's size (printed as a table; ``markdown`` for docs)."""
    release = Release.open(name, root=root, verify=False)
    problems = release.problems()
    rows = []
    for stage, record in release.manifest["stages"].items():
        segments = record.get("segments", [])
        rows.append({"stage": stage, "state": "done" if record.get("finished") else "parked",
                     "wall_min": round(sum(s["wall_seconds"] for s in segments) / 60, 1),
                     "peak_rss_gb": round(max([s["peak_rss_mb"] for s in segments] or [0]) / 1024, 2),
                     "hardware": "; ".join(sorted({s["hardware"] for s in segments})), "recipe": record.get("recipe"),
                     "validation": {k: v["value"] for k, v in record.get("validation", {}).items()}})
    if markdown:
        print("| stage | state | wall time | peak resident | recipe | hardware |\n|---|---|---|---|---|---|")
    for r in rows:
        if markdown:
            print(f"| {r['stage']} | {r['state']} | {r['wall_min']:.1f} min | {r['peak_rss_gb']:.2f} GB | "
                  f"`{r['recipe']}` | {r['hardware']} |")
        else:
            top1 = "".join(f"  {k}={v:.3f}" for k, v in r["validation"].items() if "top1" in k)
            print(f"{r['stage']:<18} {r['state']:<7} {r['wall_min']:>7.1f} min  {r['peak_rss_gb']:>5.2f} GB  "
                  f"{r['recipe']}  [{r['hardware']}]{top1}")
    print(f"agent: {'assembled' if release.manifest.get('agent') else 'not yet'}; size {release.size_bytes() / 2**20:.1f} MiB; "
          f"{'files match the manifest' if not problems else str(len(problems)) + ' files do not match the manifest'}")
    return {"stages": rows, "agent": bool(release.manifest.get("agent")), "problems": problems,
            "size_bytes": release.size_bytes()}


def park(name: str, stage: str, root: str | None = None, work: str = "checkpoints/build") -> Path:
    """Copy an unfinished stage's ``last.ckpt`` (and its run segments) into the release, to commit it."""
    release = Release.open(name, root=root)
    run_dir = REPO / work / name / stage
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ReleaseError(f"nothing to park: {ckpt} does not exist")
    segments = json.loads((run_dir / SEGMENTS).read_text()) if (run_dir / SEGMENTS).is_file() else []
    record = {"recipe": _stage_recipe(release, stage), "commit": git_commit()}
    return release.park(stage, ckpt, segments, record)


def _stage_recipe(release: Release, stage: str) -> str | None:
    """The training recipe of ``stage`` in the release recipe that built ``release`` (``None`` if not found)."""
    recipe = release.manifest.get("recipe")
    if not recipe or not (REPO / recipe).is_file():
        return None
    return next((s.recipe for s in ReleaseRecipe.load(REPO / recipe).stages if s.name == stage), None)

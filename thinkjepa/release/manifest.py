"""Released agents: trained weights that ship in the repository and load by name.

A release is a directory ``checkpoints/release/<name>/``:

    MANIFEST.json        what is here and how it was made (below)
    world_model/         the agent's world model (an export of :mod:`thinkjepa.worldmodel.export`)
    thinker/             the agent's thinker (an export of :mod:`thinkjepa.thinker.checkpoint`)
    stages/<stage>/      exports of the chain's intermediate stages, while the chain is being built
    resume/<stage>/      a long stage's Lightning checkpoint, while that stage is unfinished

``MANIFEST.json`` holds the SHA-256 of every file of the release (a missing, altered or unlisted file
is an error naming it), one record per training stage (recipe and overrides, the commit, wall time,
hardware and peak resident memory of each run segment), the agent (which stage exports it is made of
and the settings its numbers were measured with: planner, cost, snapping, reach threshold, patience)
and the evaluation measured from exactly these files.

This module knows files and hashes only; :mod:`thinkjepa.release.build` runs the stages and
:meth:`thinkjepa.policy.HierarchicalPolicy.from_release` turns a release into an agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from thinkjepa.checkpoint import CheckpointError, atomic_directory, atomic_write_text

FORMAT = "thinkjepa-release/1"
MANIFEST = "MANIFEST.json"
PARTS = ("world_model", "thinker")  # the directories an agent is made of
REPO = Path(__file__).resolve().parents[2]


class ReleaseError(CheckpointError):
    """A release is missing, incomplete or does not match its manifest; the message names the file."""


def release_root() -> Path:
    """Where releases live: ``$THINKJEPA_RELEASES`` or the repository's ``checkpoints/release``."""
    return Path(os.environ.get("THINKJEPA_RELEASES") or REPO / "checkpoints" / "release")


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(directory: Path, under: str) -> dict[str, str]:
    """``{"<under>/<relative path>": sha256}`` for every file below ``directory``."""
    return {f"{under}/{p.relative_to(directory).as_posix()}": sha256(p)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def git_commit(repo: Path = REPO) -> str | None:
    """The checked-out commit (with ``+dirty`` when tracked files differ), or ``None`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Release:
    """One release directory and its manifest.

    Args:
        path: The release directory.
        manifest: Its parsed ``MANIFEST.json``.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path, self.manifest = path, manifest

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @classmethod
    def create(cls, name: str, root: str | os.PathLike | None = None, description: str = "") -> Release:
        """A new, empty release (an error if one exists)."""
        path = Path(root or release_root()) / name
        if (path / MANIFEST).exists():
            raise ReleaseError(f"a release named {name!r} already exists at {path}")
        release = cls(path, {"format": FORMAT, "name": name, "description": description, "created": now(),
                             "stages": {}, "agent": None, "evaluation": None, "files": {}})
        release.save()
        return release

    @classmethod
    def open(cls, name_or_path: str | os.PathLike, root: str | os.PathLike | None = None,
             verify: bool = True) -> Release:
        """Open a release by name (under ``root``, default :func:`release_root`) or by directory.

        Raises:
            ReleaseError: no release there (the message lists those that exist), or, with ``verify``, a
                file that is missing, altered or not in the manifest.
        """
        path = Path(name_or_path)
        if not (path / MANIFEST).is_file():
            base = Path(root or release_root())
            path = base / str(name_or_path)
            if not (path / MANIFEST).is_file():
                known = sorted(p.parent.name for p in base.glob(f"*/{MANIFEST}")) if base.is_dir() else []
                raise ReleaseError(f"no release {str(name_or_path)!r}: {path / MANIFEST} does not exist "
                                   f"(releases in {base}: {', '.join(known) or 'none'})")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except json.JSONDecodeError as err:
            raise ReleaseError(f"{path / MANIFEST} is not valid JSON ({err})") from err
        if manifest.get("format") != FORMAT:
            raise ReleaseError(f"{path / MANIFEST} has format {manifest.get('format')!r}, expected {FORMAT!r}")
        release = cls(path, manifest)
        if verify:
            release.verify()
        return release

    # ---- integrity ------------------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every file that is missing, altered, or present but not in the manifest (one line each)."""
        listed: dict[str, str] = self.manifest["files"]
        out = []
        for rel, digest in sorted(listed.items()):
            f = self.path / rel
            if not f.is_file():
                out.append(f"{f} is missing")
            elif sha256(f) != digest:
                out.append(f"{f} was altered (its SHA-256 differs from the manifest's)")
        for f in sorted(p for p in self.path.rglob("*") if p.is_file()):
            rel = f.relative_to(self.path).as_posix()
            hidden = any(part.startswith(".") for part in rel.split("/"))  # the lock, a copy in flight
            if rel != MANIFEST and rel not in listed and not hidden:
                out.append(f"{f} is not in the manifest")
        return out

    def verify(self) -> None:
        """Raise :class:`ReleaseError` naming every file that does not match the manifest."""
        problems = self.problems()
        if problems:
            raise ReleaseError(f"release {self.name!r} at {self.path} does not match {MANIFEST}:\n  "
                               + "\n  ".join(problems))

    def save(self) -> None:
        """Write the manifest atomically (files are hashed by the operations that add them)."""
        atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=2) + "\n")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Read the manifest afresh under an exclusive lock, let the caller change it, write it back: two
        builders working on different stages of one release (two chains side by side) lose no record."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if (self.path / MANIFEST).is_file():
                    self.manifest = json.loads((self.path / MANIFEST).read_text())
                yield
                self.save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _rehash(self, under: str) -> None:
        files = {k: v for k, v in self.manifest["files"].items() if not k.startswith(under + "/")}
        if (self.path / under).is_dir():
            files.update(hash_files(self.path / under, under))
        self.manifest["files"] = dict(sorted(files.items()))

    # ---- stages ---------------------------------------------------------------------------------------------

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.manifest["stages"].get(name)

    def stage_done(self, name: str) -> bool:
        record = self.stage(name)
        return bool(record and record.get("finished"))

    def stage_export(self, name: str) -> Path:
        """Where stage ``name``'s export lies (its own directory, or the agent part it became)."""
        record = self.stage(name)
        if not record or not record.get("finished") or not record.get("export"):
            raise ReleaseError(f"release {self.name!r} has no finished stage {name!r} with an export "
                               f"(finished: {', '.join(k for k in self.manifest['stages'] if self.stage_done(k)) or 'none'})")
        return self.path / record["export"]

    def publish_stage(self, name: str, record: dict[str, Any], export: str | os.PathLike | None = None) -> None:
        """Record a finished stage and copy its export (a directory) into ``stages/<name>``.

        ``record`` holds what the stage was (recipe, arguments, run segments with wall time, hardware and
        peak memory); the stage's parked Lightning checkpoint, if any, is removed.
        """
        if export is not None and not Path(export).is_dir():
            raise ReleaseError(f"stage {name!r}: its export {export} is not a directory")
        with self.transaction():
            record = {**(self.stage(name) or {}), **record, "finished": now()}
            if export is not None:
                with atomic_directory(self.path / "stages" / name) as tmp:
                    shutil.copytree(export, tmp, dirs_exist_ok=True)
                record["export"] = f"stages/{name}"
                self._rehash(f"stages/{name}")
            self.manifest["stages"][name] = record
            self.drop_resume(name)

    def park(self, name: str, checkpoint: str | os.PathLike, segments: list[dict[str, Any]],
             record: dict[str, Any] | None = None) -> Path:
        """Keep an unfinished stage's Lightning checkpoint in ``resume/<name>/last.ckpt`` (to commit it);
        ``record`` adds to the stage's record (e.g. its recipe)."""
        target = self.path / "resume" / name
        with self.transaction():
            with atomic_directory(target) as tmp:
                shutil.copy2(checkpoint, tmp / "last.ckpt")
            self.manifest["stages"][name] = {**(self.stage(name) or {}), **(record or {}), "segments": segments,
                                             "finished": None, "resume": f"resume/{name}/last.ckpt"}
            self._rehash(f"resume/{name}")
        return target / "last.ckpt"

    def drop_resume(self, name: str) -> None:
        shutil.rmtree(self.path / "resume" / name, ignore_errors=True)
        if (self.path / "resume").is_dir() and not any((self.path / "resume").iterdir()):
            (self.path / "resume").rmdir()
        self.manifest["stages"].get(name, {}).pop("resume", None)
        self._rehash(f"resume/{name}")

    # ---- the agent ------------------------------------------------------------------------------------------

    def assemble(self, world_model_stage: str, thinker_stage: str | None, settings: dict[str, Any],
                 prune: Iterable[str] = ()) -> None:
        """Make the agent: the two stage exports become ``world_model/`` and ``thinker/``.

        Args:
            world_model_stage: The stage whose export is the agent's world model.
            thinker_stage: The stage whose export is its thinker (``None``: a flat-only release).
            settings: What the agent plans with (:class:`~thinkjepa.policy.settings.AgentSettings` as a dict).
            prune: Stages whose exports are no longer needed once the agent exists (their records stay).
        """
        with self.transaction():
            for part, stage in (("world_model", world_model_stage), ("thinker", thinker_stage)):
                if stage is None:
                    continue
                source = self.stage_export(stage)
                if source != self.path / part:
                    with atomic_directory(self.path / part) as tmp:
                        shutil.copytree(source, tmp, dirs_exist_ok=True)
                    for other, record in self.manifest["stages"].items():  # the part they were is replaced
                        if other != stage and record.get("export") == part:
                            record["export"] = None
                    self.manifest["stages"][stage]["export"] = part
                    self._rehash(part)
            self.manifest["agent"] = {"world_model": "world_model", "thinker": "thinker" if thinker_stage else None,
                                      "settings": settings, "assembled": now()}
            for stage in {world_model_stage, thinker_stage, *prune} - {None}:
                if (self.path / "stages" / stage).is_dir():
                    shutil.rmtree(self.path / "stages" / stage)
                    self._rehash(f"stages/{stage}")
                if stage in prune and (self.manifest["stages"][stage].get("export") or "").startswith("stages/"):
                    self.manifest["stages"][stage]["export"] = None
            if (self.path / "stages").is_dir() and not any((self.path / "stages").iterdir()):
                (self.path / "stages").rmdir()
            self.manifest["evaluation"] = None  # measured on other files

    @property
    def agent(self) -> dict[str, Any]:
        if not self.manifest.get("agent"):
            done = [k for k in self.manifest["stages"] if self.stage_done(k)]
            raise ReleaseError(f"release {self.name!r} at {self.path} has no agent yet: the chain that builds it is "
                               f"unfinished (stages done: {', '.join(done) or 'none'}); "
                               f"`thinkjepa release build` carries it on")
        return self.manifest["agent"]

    @property
    def world_model_path(self) -> Path:
        return self.path / self.agent["world_model"]

    @property
    def thinker_path(self) -> Path | None:
        thinker = self.agent["thinker"]
        return None if thinker is None else self.path / thinker

    def agent_digest(self) -> str:
        """SHA-256 over the hashes of the agent's files: what an evaluation was measured on."""
        parts = [p for p in (self.agent["world_model"], self.agent["thinker"]) if p]
        h = hashlib.sha256()
        for rel, digest in sorted(self.manifest["files"].items()):
            if rel.split("/", 1)[0] in parts:
                h.update(f"{rel}:{digest}\n".encode())
        return h.hexdigest()

    def record_evaluation(self, evaluation: dict[str, Any]) -> None:
        """Store an evaluation of this agent (with the digest of the files it was measured on)."""
        with self.transaction():
            self.manifest["evaluation"] = {**evaluation, "agent_digest": self.agent_digest(), "commit": git_commit(),
                                           "date": now()}

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

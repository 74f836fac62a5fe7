"""The ``thinkjepa`` command.

    thinkjepa fit --config recipes/wm/babyai-tiny.yaml        train (LightningCLI: fit/validate/test)
    thinkjepa collect --levels '[BabyAI-GoToLocal-v0]' ...    roll the BabyAI bot, write episodes
    thinkjepa collect-swm --env_id swm/TwoRoom-v1 ...         roll a stable-worldmodel expert (continuous actions)
    thinkjepa eval ...                                        evaluate policies (see thinkjepa.policy)
    thinkjepa eval-swm --world_model PATH --env_id swm/TwoRoom-v1   goal reaching under the published protocol
    thinkjepa probe --world_model PATH                        pose probe of a world model's latent space
    thinkjepa score-thinker --thinker PATH --world_model PATH  a saved thinker's held-out metrics per level
    thinkjepa release build|status|park|verify|evaluate ...   released agents (see thinkjepa.release)

Training runs are LightningCLI runs: the model and data classes come from the recipe's
``class_path``, every ``__init__`` argument is a config key, unknown keys are errors, and the
resolved config is saved beside the checkpoints.

``THINKJEPA_NUM_THREADS`` sets torch's CPU threads (the Makefile defaults it to 1: tiny models on a
couple of shared cores run 20-60x slower with more).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningCLI

from thinkjepa.checkpoint import CheckpointError


def _collect(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from thinkjepa.data.collect import collect

    auto_cli(collect, args=argv, as_positional=False)


def _collect_swm(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from thinkjepa.envs.swm import collect_swm

    auto_cli(collect_swm, args=argv, as_positional=False)


def _eval(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from thinkjepa.policy.evaluate import evaluate

    auto_cli(evaluate, args=argv, as_positional=False)


def _eval_swm(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from thinkjepa.policy.swm_eval import evaluate_swm

    auto_cli(evaluate_swm, args=argv, as_positional=False)


def _probe(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from thinkjepa.worldmodel.probe import probe

    auto_cli(probe, args=argv, as_positional=False)


def _score_thinker(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from thinkjepa.thinker.score import score_thinker

    auto_cli(score_thinker, args=argv, as_positional=False)


def _release(argv: list[str]) -> None:
    from jsonargparse import CLI

    from thinkjepa.policy.release_eval import evaluate_release
    from thinkjepa.release.build import build, park, status

    def verify(name: str, root: str | None = None) -> None:
        """Check every file of a release against its manifest's SHA-256 (an error names each that differs)."""
        from thinkjepa.release import Release

        release = Release.open(name, root=root)
        print(f"{release.name}: {len(release.manifest['files'])} files match {release.path / 'MANIFEST.json'}")

    CLI({"build": build, "status": status, "park": park, "verify": verify, "evaluate": evaluate_release},
        args=argv, as_positional=True)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "collect": _collect,
    "collect-swm": _collect_swm,
    "eval": _eval,
    "eval-swm": _eval_swm,
    "release": _release,
    "probe": _probe,
    "score-thinker": _score_thinker,
}


class ThinkJEPACLI(LightningCLI):
    """LightningCLI whose ``--ckpt_path`` resumes a run without re-parsing its hyper-parameters.

    A resumed run takes its configuration from the recipe and the command line, like the original
    run; the checkpoint supplies weights, EMA target, optimizer, schedulers and loop position.
    """

    def _parse_ckpt_path(self) -> None:
        return


def train(argv: list[str] | None, run: bool = True) -> LightningCLI:
    """Run LightningCLI (``fit``/``validate``/``test``) with thinkjepa's defaults.

    ``argv=None`` reads the command line. With ``run=False`` there is no subcommand: the trainer, model and
    data module are only built.
    """
    return ThinkJEPACLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={"plugins": [{"class_path": "thinkjepa.train.checkpoint_io.AtomicCheckpointIO"}]},
        save_config_kwargs={"overwrite": True},
        args=argv,
        run=run,
    )


def configure_threads() -> None:
    """Apply ``THINKJEPA_NUM_THREADS`` (small models on a few shared cores run faster on one thread)."""
    threads = os.environ.get("THINKJEPA_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def quiet_output() -> None:
    """Output that suits a log as well as a terminal: progress bars redraw at most every 10 s when the output
    is not a terminal (a log of bar redraws is unreadable), and a deprecation notice that transformers prints
    on every thinker load is not repeated to the user."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*isinstance\(treespec, LeafSpec\).*")


def main(argv: list[str] | None = None) -> None:
    """``thinkjepa``. From the command line (``argv=None``) a bad input — a missing checkpoint, an unknown
    level, a release that does not match its manifest, a bad recipe value — ends in one line naming it and exit
    status 2 (``THINKJEPA_DEBUG=1`` shows the traceback); called with ``argv``, errors propagate."""
    configure_threads()
    quiet_output()
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] in COMMANDS:
            COMMANDS[args[0]](args[1:])
        else:
            train(argv)  # None: LightningCLI reads the command line itself
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        if argv is not None or os.environ.get("THINKJEPA_DEBUG"):
            raise
        print(f"thinkjepa: error: {err}\n(THINKJEPA_DEBUG=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

"""``thinkjepa fit`` that SIGKILLs itself when training reaches a given global step (test helper).

    python tests/reliability/killable_fit.py KILL_AT_STEP <LightningCLI arguments, no subcommand...>

The kill happens at the start of batch ``KILL_AT_STEP`` (no clean-up, no final checkpoint), which
is what a preempted machine does to a run.
"""

import os
import signal
import sys

import lightning.pytorch as pl
import torch

from thinkjepa.cli import train


class KillAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    torch.set_num_threads(1)
    cli = train(sys.argv[2:], run=False)
    cli.trainer.callbacks.append(KillAt(int(sys.argv[1])))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

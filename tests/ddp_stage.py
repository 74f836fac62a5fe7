"""Fit any training stage under the given LightningCLI arguments and dump, per rank, its trainable weights before
and after (used by test_ddp_stages.py).

    python tests/ddp_stage.py DUMP_DIR <LightningCLI arguments, no subcommand...>
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from thinkjepa.cli import train


def trainable(module: pl.LightningModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


class DumpWeights(pl.Callback):
    def __init__(self, out: Path, before: dict[str, torch.Tensor]) -> None:
        self.out, self.before = out, before

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        torch.save({"before": self.before, "after": trainable(module), "world_size": trainer.world_size,
                    "steps": trainer.global_step}, self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cli = train(sys.argv[2:], run=False)
    cli.trainer.callbacks.append(DumpWeights(out, trainable(cli.model)))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

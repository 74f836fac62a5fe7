"""Run ``thinkjepa fit`` and dump each rank's target-encoder weights (used by test_training.py).

    python tests/worldmodel/ddp_fit.py DUMP_DIR <LightningCLI arguments, no subcommand...>
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from thinkjepa.cli import train


class DumpTargetEncoder(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in module.model.target_encoder.state_dict().items()}
        torch.save({"state": state, "world_size": trainer.world_size}, self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cli = train(sys.argv[2:], run=False)
    cli.trainer.callbacks.append(DumpTargetEncoder(out))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

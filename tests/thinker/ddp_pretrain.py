"""Run ``thinkjepa fit`` of a grounding-pretraining recipe and dump what each rank trained on and ended with
(used by test_pretrain.py).

    python tests/thinker/ddp_pretrain.py DUMP_DIR <LightningCLI arguments, no subcommand...>
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from thinkjepa.cli import train


class DumpBatches(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.images = out, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.images.append(batch["image"].clone())

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in module.vlm.state_dict().items()}
        torch.save({"images": self.images, "vlm": state, "world_size": trainer.world_size},
                   self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cli = train(sys.argv[2:], run=False)
    cli.trainer.callbacks.append(DumpBatches(out))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

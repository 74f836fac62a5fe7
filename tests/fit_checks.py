"""What every recipe test asserts after a short fit: the step ran, its loss is finite, and the weights that
should train moved (and only those)."""

from __future__ import annotations

import torch

from thinkjepa.cli import train


def fit_and_check(args: list[str], ema: str | None = None) -> None:
    """Build the run ``args`` describe (LightningCLI arguments without the subcommand), fit it and check it.

    ``ema``: the name prefix of frozen weights that follow the trained ones by EMA (they must move too).
    """
    cli = train(args, run=False)
    model = cli.model
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable, f"{type(model).__name__} has nothing to train"
    cli.trainer.fit(model, datamodule=cli.datamodule)
    assert cli.trainer.global_step >= 1
    loss = cli.trainer.callback_metrics.get("train/loss")
    assert loss is not None and torch.isfinite(loss), f"train/loss is {loss}"
    params = dict(model.named_parameters())
    moved = [n for n, before in trainable.items() if not torch.equal(params[n].detach(), before)]
    assert moved, "no trainable weight changed"
    followed = {n for n in frozen if ema is not None and n.startswith(ema)}
    assert ema is None or followed, f"no frozen weight is named {ema}*"
    assert all(torch.equal(params[n].detach(), frozen[n]) for n in frozen.keys() - followed), "a frozen weight changed"
    assert all(not torch.equal(params[n].detach(), frozen[n]) for n in followed if frozen[n].ndim > 1), \
        "the EMA target did not follow"

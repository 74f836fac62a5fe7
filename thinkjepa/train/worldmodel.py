"""``WorldModelModule``: trains the JEPA world model with Lightning.

Logged to TensorBoard: the loss and its parts, the EMA momentum, collapse diagnostics (per-dimension
std of Z, effective rank of Z) and validation forecast quality (top-1 retrieval and latent error at
1/4/8 open-loop steps, with the chance level). At the end of ``fit`` the world model is exported to
``<default_root_dir>/world_model`` (see :mod:`thinkjepa.worldmodel.export`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from thinkjepa.checkpoint import load_state_dict_strict
from thinkjepa.configs import as_dataclass
from thinkjepa.optim import OptimConfig, adamw_warmup_cosine
from thinkjepa.worldmodel.ema import cosine_momentum, ema_update
from thinkjepa.worldmodel.encoder import EncoderConfig
from thinkjepa.worldmodel.export import architecture, load_world_model, save_world_model
from thinkjepa.worldmodel.jepa import JEPA, ObjectiveConfig
from thinkjepa.worldmodel.metrics import ActionDiscrimination, ForecastRetrieval, effective_rank
from thinkjepa.worldmodel.predictor import PredictorConfig
from thinkjepa.worldmodel.regularizers import Regularizer, VICReg


def check_data_fits(module: pl.LightningModule, model: JEPA, eval_horizons: tuple[int, ...]) -> None:
    """Refuse, before any compute, data whose image size or action count the model cannot take, or
    validation windows too short for the open-loop horizons scored."""
    dm = module.trainer.datamodule if module.trainer is not None else None
    if dm is None:
        return
    enc, pred = model.encoder.config, model.predictor.config
    space = getattr(dm, "action_space", None)
    if space is not None and space != pred.action_space:
        raise ValueError(
            f"the data's actions are {space} but the model's predictor takes {pred.action_space} ones "
            f"(model.predictor.action_space={pred.action_space!r})"
        )
    for name, data_value, model_value in (
        ("image_size", getattr(dm, "image_size", None), enc.image_size),
        ("num_actions", getattr(dm, "num_actions", None), pred.num_actions),
    ):
        if data_value is not None and data_value != model_value and not (
            name == "num_actions" and data_value < model_value and pred.action_space == "discrete"
        ):
            raise ValueError(
                f"data {name}={data_value} does not match the model's {name}={model_value} "
                f"(model.{'encoder.image_size' if name == 'image_size' else 'predictor.num_actions'})"
            )
    val_window = getattr(dm, "val_window", None)
    if val_window is not None and max(eval_horizons) >= val_window:
        raise ValueError(
            f"model.eval_horizons={list(eval_horizons)} needs data.val_window > {max(eval_horizons)}, got {val_window}"
        )


def start_from(model: JEPA, source: str | os.PathLike) -> None:
    """Copy the encoders and predictor of the world model at ``source`` into ``model``.

    Raises:
        ValueError: ``source`` has another encoder or predictor architecture (the differing fields
            are named).
    """
    src = load_world_model(source)
    theirs, ours = architecture(src), architecture(model)
    diffs = [
        f"{part}.{k}: {theirs[part][k]!r} there, {ours[part].get(k)!r} here"
        for part in ("encoder", "predictor") for k in theirs[part] if theirs[part][k] != ours[part].get(k)
    ]
    if diffs:
        raise ValueError(f"init_from={source} has another architecture than this model: " + "; ".join(diffs))
    for part in ("encoder", "target_encoder", "predictor"):
        load_state_dict_strict(getattr(model, part), getattr(src, part).state_dict(), f"{source} ({part})")


def log_forecast_metrics(
    module: pl.LightningModule, forecast: ForecastRetrieval, actions: ActionDiscrimination, horizons: tuple[int, ...]
) -> None:
    """Log (and reset) the validation forecast retrieval and action discrimination of an epoch."""
    for k, v in forecast.compute().items():
        module.log(f"val/{k}", v, prog_bar=k == f"top1@{max(horizons)}")
    forecast.reset()
    if actions.update_count:
        module.log("val/action_top1", actions.compute(), prog_bar=True)
        actions.reset()


def export_on_fit_end(module: pl.LightningModule, model: JEPA) -> None:
    """Export ``model`` to ``<default_root_dir>/world_model`` (rank 0; not after ``fast_dev_run``)."""
    if module.trainer.fast_dev_run or module.trainer.global_rank != 0:
        return
    path = save_world_model(model, Path(module.trainer.default_root_dir) / "world_model")
    print(f"world model exported to {path}")


@dataclass(frozen=True)
class EMAConfig:
    """Target-encoder momentum, rising from ``base`` to ``final`` along a cosine.

    Attributes:
        base: Momentum at step 0.
        final: Momentum at the last step.
    """

    base: float = 0.99
    final: float = 1.0


class WorldModelModule(pl.LightningModule):
    """Trains a :class:`~thinkjepa.worldmodel.jepa.JEPA` on windows of frames and actions.

    Args:
        encoder: Context/target encoder architecture (timm ViT).
        predictor: Action-conditioned predictor architecture.
        regularizer: Anti-collapse regularizer R(Z) (``VICReg`` or ``SIGReg``, or your own class).
        objective: Loss weights and rollout length.
        optim: Optimizer and schedule.
        ema: Target-encoder momentum schedule.
        eval_horizons: Open-loop steps scored on validation windows.
        collapse_std: Warn about collapse when the mean per-dimension std of Z falls below this.
        init_from: A world model (export directory or ``.ckpt``) of the same architecture whose
            encoders and predictor start this run — fine-tuning on another level's episodes. The
            inverse-dynamics head, never exported, starts fresh. A resumed run's checkpoint wins.
    """

    def __init__(
        self,
        encoder: EncoderConfig = EncoderConfig(),
        predictor: PredictorConfig = PredictorConfig(),
        regularizer: Regularizer | None = None,
        objective: ObjectiveConfig = ObjectiveConfig(),
        optim: OptimConfig = OptimConfig(),
        ema: EMAConfig = EMAConfig(),
        eval_horizons: tuple[int, ...] = (1, 4, 8),
        collapse_std: float = 0.05,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        encoder, predictor = as_dataclass(EncoderConfig, encoder), as_dataclass(PredictorConfig, predictor)
        self.objective, self.optim, self.ema = (
            as_dataclass(ObjectiveConfig, objective), as_dataclass(OptimConfig, optim), as_dataclass(EMAConfig, ema),
        )
        regularizer = regularizer if regularizer is not None else VICReg()
        # Plain dicts only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters({
            "encoder": asdict(encoder), "predictor": asdict(predictor),
            "regularizer": f"{type(regularizer).__module__}.{type(regularizer).__qualname__}",
            "objective": asdict(self.objective), "optim": asdict(self.optim), "ema": asdict(self.ema),
            "eval_horizons": list(eval_horizons), "collapse_std": collapse_std, "init_from": init_from,
        })
        self.model = JEPA(encoder, predictor, regularizer)
        if init_from is not None:
            start_from(self.model, init_from)
        self.eval_horizons = tuple(eval_horizons)
        self.collapse_std = collapse_std
        self.val_forecast = ForecastRetrieval(self.eval_horizons)
        self.val_actions = ActionDiscrimination()
        self._val_latents: list[torch.Tensor] = []

    # -- set-up checks: fail before any compute -------------------------------------------------
    def setup(self, stage: str) -> None:
        check_data_fits(self, self.model, self.eval_horizons)

    # -- training --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch["frames"], batch["actions"], self.objective)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(self._nonfinite_message(out))
        z = out["z"].detach().flatten(0, 1)
        self.log_dict(
            {f"train/{k}": out[k].detach() for k in ("loss", "teacher", "rollout", "reg", "idm", "idm_acc") if k in out},
            prog_bar=False, on_step=True, on_epoch=False, sync_dist=False,
        )
        self.log("train/loss_pbar", loss.detach(), prog_bar=True, logger=False)
        self.log("train/z_std", z.std(dim=0).mean(), on_step=True)
        return loss

    def _nonfinite_message(self, out: dict[str, torch.Tensor]) -> str:
        parts = ", ".join(f"{k}={out[k].item():.4g}" for k in ("teacher", "rollout", "reg"))
        ckpt = None
        cb = getattr(self.trainer, "checkpoint_callback", None)
        if cb is not None:
            ckpt = cb.last_model_path or cb.best_model_path or None
        kept = f"the last good checkpoint, {ckpt}, is kept" if ckpt else "no checkpoint had been written yet"
        return f"non-finite loss at global step {self.global_step} ({parts}); stopping; {kept}"

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # The EMA update belongs to the optimizer step, not to on_train_batch_end: checkpoint
        # callbacks run in on_train_batch_end *before* the module's hook, so an update there would be
        # missing from a checkpoint written at that step and lost on resume.
        super().optimizer_step(*args, **kwargs)
        total = self.trainer.estimated_stepping_batches
        m = cosine_momentum(self.global_step, int(total) if math.isfinite(total) else 0, self.ema.base, self.ema.final)
        ema_update(self.model.target_encoder, self.model.encoder, m)
        self.log("train/ema_momentum", m, on_step=True)

    # -- validation ------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        frames, actions = batch["frames"], batch["actions"]
        b, t = frames.shape[:2]
        out = self.model.loss(frames, actions, self.objective)
        self.log("val/loss", out["loss"], on_epoch=True, sync_dist=True, prog_bar=True)
        z_tgt = self.model.target_encode(frames.flatten(0, 1)).view(b, t, -1)
        pred = self.model.rollout(out["z"][:, 0], actions)  # (B, T-1, D) open loop
        self.val_forecast.update(pred, z_tgt[:, 1:])
        if not self.model.continuous:
            self.val_actions.update(self.model, out["z"][:, :-1], z_tgt[:, 1:], actions)
        if "idm_acc" in out:
            self.log("val/idm_acc", out["idm_acc"], on_epoch=True)
        self._val_latents.append(out["z"][:, 0].detach())

    def on_validation_epoch_end(self) -> None:
        log_forecast_metrics(self, self.val_forecast, self.val_actions, self.eval_horizons)
        if not self._val_latents:
            return
        z = torch.cat(self._val_latents)
        self._val_latents.clear()
        std = z.std(dim=0)
        rank = effective_rank(z)
        self.log_dict({"val/z_std_mean": std.mean(), "val/z_std_min": std.min(), "val/z_effective_rank": rank})
        if std.mean() < self.collapse_std and self.global_step > self.optim.warmup_steps:
            rank_zero_warn(
                f"representation collapse suspected at step {self.global_step}: mean per-dimension std "
                f"of Z is {std.mean():.3g} (< {self.collapse_std}), effective rank {rank:.1f} of "
                f"{z.shape[1]}; raise the regularizer weight (model.objective.reg_weight)"
            )

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        return adamw_warmup_cosine(self.model.parameters(), o.lr, o.weight_decay, o.warmup_steps, o.min_lr_ratio,
                                   self.trainer.estimated_stepping_batches)

    # -- export ----------------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        export_on_fit_end(self, self.model)

"""Stage 2 of world-model training: fit the action-conditioned predictor on frozen encoder latents.

Stage 1 (:class:`~thinkjepa.train.worldmodel.WorldModelModule`) learns the encoder and a predictor
jointly on images. On BabyAI its latent space is already a good planning cost — with the *true*
dynamics, choosing the action sequence whose frames come closest to the goal latent solved 27/27
held-out GoToLocal episodes — but its predictor, fit on 2k episodes, is not: the same search through
the predicted rollouts found the goal in 8/27. Fine-tuning that predictor longer on the same
episodes overfits (validation error rises), while 15k more episodes raised it to 20/27. Stage 2 is
therefore built for data: every frame is encoded once by the frozen target encoder
(:mod:`thinkjepa.data.latents`), and the predictor trains on the cached latents at ~100x the speed
of a stage-1 step, as DINO-WM and V-JEPA 2-AC fit predictors on frozen encoders.

The exported world model uses the target encoder for both ``encode`` and ``target_encode``: the
predictor was fit from target latents, so that is what a planner must feed it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch

from thinkjepa.configs import as_dataclass
from thinkjepa.data.latents import Encode, Guide
from thinkjepa.optim import OptimConfig, adamw_warmup_cosine
from thinkjepa.thinker.guidance import VLMGuidance, write_guidance_record
from thinkjepa.train.worldmodel import check_data_fits, export_on_fit_end, log_forecast_metrics
from thinkjepa.worldmodel.export import target_encoder_fingerprint, world_model_part
from thinkjepa.worldmodel.jepa import JEPA, ObjectiveConfig
from thinkjepa.worldmodel.metrics import ActionDiscrimination, ForecastRetrieval
from thinkjepa.worldmodel.predictor import MLPPredictor, PredictorConfig, with_guidance


class PredictorModule(pl.LightningModule):
    """Fits a world model's predictor on latents of its frozen target encoder.

    Args:
        world_model: The stage-1 world model (a ``JEPA``, or its export directory or ``.ckpt``); its encoders
            are frozen.
        predictor: Predictor architecture; ``None`` keeps stage 1's.
        reinit: Start from random weights even when the architecture is stage 1's (otherwise stage
            1's predictor is fine-tuned; a different architecture always starts from scratch).
        rollout_steps: Open-loop steps of the rollout term.
        rollout_weight: Weight of the rollout term (the teacher-forced term has weight 1).
        optim: Optimizer and schedule.
        eval_horizons: Open-loop steps scored on validation windows.
        guidance: A grounded VLM export (:class:`~thinkjepa.thinker.guidance.VLMGuidance`, frozen): the predictor
            becomes guided, ``g(z_t, a_t, c)``, with gated FiLM in every block that starts closed, so training
            starts from the unguided predictor's exact output; ``c`` is the VLM's reading of each window's first
            frame and its episode's instruction, held for the whole window (the thinker's slow rate). The
            vectors are cached per frame beside the latents. The export records the VLM (``guidance.json``).
        guidance_layers: The VLM's hidden states pooled into ``c`` (default: every layer).
    """

    def __init__(
        self,
        world_model: str | JEPA,
        predictor: PredictorConfig | None = None,
        reinit: bool = False,
        rollout_steps: int = 4,
        rollout_weight: float = 1.0,
        optim: OptimConfig = OptimConfig(),
        eval_horizons: tuple[int, ...] = (1, 4, 8),
        guidance: str | None = None,
        guidance_layers: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        model, source = world_model_part(world_model)
        self.source = source
        self.source_key = target_encoder_fingerprint(model)
        config = model.predictor.config if predictor is None else as_dataclass(PredictorConfig, predictor)
        if reinit or config != model.predictor.config:
            model.predictor = MLPPredictor(config, model.latent_dim)
        self.guide = None
        if guidance is not None:
            self.guide = VLMGuidance(guidance, layers=guidance_layers)
            model.predictor = with_guidance(model.predictor, self.guide.dim)  # gates closed: its output unchanged
            config = model.predictor.config
        # Planning encodes observations with `encode`; the predictor is fit from target latents.
        model.encoder.load_state_dict(model.target_encoder.state_dict())
        model.predictor.requires_grad_(True).train()  # load_world_model returns everything frozen, in eval mode
        self.model = model
        self.objective = ObjectiveConfig(rollout_steps=rollout_steps, rollout_weight=rollout_weight)
        self.optim = as_dataclass(OptimConfig, optim)
        self.eval_horizons = tuple(eval_horizons)
        # Plain dicts only (weights-only checkpoints); "encoder"/"predictor" let load_world_model read a .ckpt.
        self.save_hyperparameters({
            "world_model": self.source, "source_key": self.source_key, "reinit": reinit,
            "encoder": asdict(model.encoder.config), "predictor": asdict(config),
            "rollout_steps": rollout_steps, "rollout_weight": rollout_weight,
            "optim": asdict(self.optim), "eval_horizons": list(eval_horizons),
            "guidance": guidance, "guidance_layers": None if guidance_layers is None else list(guidance_layers),
        })
        self.val_forecast = ForecastRetrieval(self.eval_horizons)
        self.val_actions = ActionDiscrimination()

    def latent_source(self) -> tuple[Encode, str]:
        """What :class:`~thinkjepa.train.windows.LatentDataModule` encodes frames with, and its cache key."""
        return self.model.target_encode, self.source_key

    def guidance_source(self) -> tuple[Guide, str] | None:
        """What :class:`~thinkjepa.train.windows.LatentDataModule` computes each frame's guidance with, and its
        cache key (``None`` for an unguided predictor)."""
        if self.guide is None:
            return None
        key = hashlib.sha256(json.dumps([self.guide.source_key, list(self.guide.layers)]).encode()).hexdigest()[:16]
        return self.guide, key

    def setup(self, stage: str) -> None:
        check_data_fits(self, self.model, self.eval_horizons)

    def train(self, mode: bool = True) -> PredictorModule:
        super().train(mode)
        self.model.encoder.eval()  # frozen: no dropout / drop-path, ever
        self.model.target_encoder.eval()
        return self  # a guide (VLMGuidance) keeps itself in eval mode

    def _loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = batch["latents"]
        teacher, roll = self.model.dynamics_loss(z, z, batch["actions"], self.objective, batch.get("guidance"))
        loss = teacher + self.objective.rollout_weight * roll
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite predictor loss at global step {self.global_step} "
                f"(teacher={teacher.item():.4g}, rollout={roll.item():.4g}); stopping"
            )
        return {"loss": loss, "teacher": teacher, "rollout": roll}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._loss(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, on_epoch=False)
        self.log("train/loss_pbar", out["loss"].detach(), prog_bar=True, logger=False)
        return out["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        z, actions = batch["latents"], batch["actions"]
        self.log("val/loss", self._loss(batch)["loss"], on_epoch=True, sync_dist=True, prog_bar=True)
        self.val_forecast.update(self.model.rollout(z[:, 0], actions, guidance=batch.get("guidance")), z[:, 1:])
        if not self.model.continuous:  # which of the K actions explains each step: discrete actions only
            self.val_actions.update(self.model, z[:, :-1], z[:, 1:], actions)

    def on_validation_epoch_end(self) -> None:
        log_forecast_metrics(self, self.val_forecast, self.val_actions, self.eval_horizons)

    def configure_optimizers(self) -> dict:
        o = self.optim
        return adamw_warmup_cosine(self.model.predictor.parameters(), o.lr, o.weight_decay, o.warmup_steps,
                                   o.min_lr_ratio, self.trainer.estimated_stepping_batches)

    def on_fit_end(self) -> None:
        export_on_fit_end(self, self.model)
        if self.guide is not None and not self.trainer.fast_dev_run and self.trainer.global_rank == 0:
            write_guidance_record(Path(self.trainer.default_root_dir) / "world_model", self.guide)

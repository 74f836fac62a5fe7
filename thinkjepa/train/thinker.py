"""``ThinkerModule``: LoRA-finetunes a VLM + latent head to propose world-model subgoals.

Target: the frozen world model's *target-encoder* latent of the subgoal frame, ``y = z̄(o_subgoal)``.
Loss: the planner's energy ``‖z* − y‖²`` (summed over D, mean over the batch), optionally plus an InfoNCE
term that makes z* nearer its own target than the other targets of the batch: logits ``−‖z*_i − y_j‖² / (τ s)``
with ``s`` the batch's mean squared target-target distance (so τ is free of the latent scale), and optionally
a grounding term: on samples that know where the named object is (generated ones, ``target_pixel``), the
cross-entropy of the head's grounded pool over image tokens against that object's token — and the same for
the pool's second query against the token where the agent stands at the subgoal (``waypoint_pixel``).

The world model is frozen, so every latent the loss and the metrics need (targets, current-frame latents
for the residual head and the copy baseline, each validation episode's candidate frames) is encoded once in
``setup`` and looked up by sample index afterwards; a step then costs only the VLM.

Lightning checkpoints hold only the trained weights (adapters, head, declared patterns): the frozen rest is
rebuilt from ``vlm`` (a tiny model's seed makes it identical) and ``world_model``, and
:meth:`ThinkerModule.on_load_checkpoint` checks that the keys are exactly the trained ones. At the end of
``fit`` the thinker is exported to ``<default_root_dir>/thinker`` (:mod:`thinkjepa.thinker.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from peft import LoraConfig

from thinkjepa.configs import as_dataclass
from thinkjepa.data.latents import encode_fixed_batches, stacked
from thinkjepa.optim import OptimConfig, adamw_warmup_cosine
from thinkjepa.thinker.build import build_thinker, lora_config, lora_settings, plain
from thinkjepa.thinker.checkpoint import (
    save_thinker,
    world_model_fingerprint,
)
from thinkjepa.thinker.head import HeadOptions
from thinkjepa.thinker.metrics import SubgoalMetrics
from thinkjepa.thinker.vlm import (
    TEXT_MODEL_LORA_TARGETS,
    PretrainedVLM,
    TinyVLM,
    pixel_tokens,
)
from thinkjepa.worldmodel import JEPA
from thinkjepa.worldmodel.export import world_model_part


@dataclass(frozen=True)
class LossOptions:
    """The training objective."""

    infonce_weight: float = 0.0
    """Weight of the in-batch InfoNCE term (0 disables it)."""
    temperature: float = 0.1
    """InfoNCE temperature, relative to the batch's mean squared distance between targets."""
    grounding_weight: float = 0.0
    """Weight of the grounding loss: cross-entropy of the head's grounded pool (``head.pooling: grounded``)
    against the image token that shows the named object, on samples that know it (the data module's
    ``grounding_samples``). Privileged training-time supervision, like the distance head's labels: it
    teaches the VLM which words pick which object, which the subgoal loss alone never did."""
    waypoint_grounding_weight: float = 0.0
    """Weight of the same loss for the grounded pool's second query (``head.queries: 2``) against the image
    token where the agent stands at the subgoal (the waypoint's cell), on the samples that know it."""


DEFAULT_VLM = TinyVLM()
# A lazy instance serialises as its arguments only, so a recipe's `lora: {r: 16}` merges over these.
DEFAULT_LORA = lazy_instance(
    LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TEXT_MODEL_LORA_TARGETS
)
DEFAULT_HEAD = HeadOptions()
DEFAULT_LOSS = LossOptions()
DEFAULT_OPTIM = OptimConfig(weight_decay=0.0, warmup_steps=20, min_lr_ratio=0.1)


def _absolute(model_path: str) -> str:
    """A local directory as an absolute path (the export may be loaded from another directory); else a Hub id."""
    return str(Path(model_path).resolve()) if Path(model_path).exists() else model_path


class ThinkerModule(pl.LightningModule):
    """Finetunes a :class:`~thinkjepa.thinker.thinker.Thinker` against a frozen world model.

    Args:
        world_model: The world model whose latent space z* lives in: a ``JEPA``, or its export directory (or
            Lightning ``.ckpt``).
        vlm: A :class:`TinyVLM` spec (random init, saved into the exported thinker) or a
            :class:`PretrainedVLM` (``model_path``: local directory or cached Hub id).
        lora: LoRA adapters (``peft.LoraConfig``); ``None`` trains no adapters. Without ``target_modules``
            (and by default) the adapters go on the language model's attention and MLP linears only.
        trainable: Regexes of base-VLM parameter names that train besides the adapters and the head
            (e.g. ``model.connector`` for a random-init Idefics3); all else is frozen.
        head: How the latent head pools the VLM (layers, pooling, width, residual on the current latent).
        prompt: Text shown with the image; ``{instruction}`` is replaced by the mission.
        text_first: Show the instruction before the image, so that the image tokens attend to it
            (see :class:`~thinkjepa.thinker.thinker.Thinker`).
        loss: Loss weights.
        optim: Optimizer and schedule.
        neutral_instruction: The one mission the language-blind ablation sees.
        language_blind: Train (and validate) with every mission replaced by ``neutral_instruction``: the
            language-blind baseline run.
        encode_batch_size: Batch size of the one-off world-model encoding in ``setup``.
        init_from: An exported thinker of the same architecture (VLM, adapters, head) to start from, e.g.
            one trained on another level or against another world model: its weights are copied, its
            world model is not checked (the run retrains the head for this one). One trained without
            adapters may start a run with ``lora``: its VLM is copied before the adapters go on (see
            :func:`start_from`). Or a grounding-pretrained VLM of the same ``vlm`` spec
            (:mod:`thinkjepa.train.grounding`): its weights are copied before any LoRA adapters go on, and
            its read-out starts the head's grounded pool. A resumed run's checkpoint still wins.
    """

    def __init__(
        self,
        world_model: str | JEPA,
        vlm: TinyVLM | PretrainedVLM = DEFAULT_VLM,
        lora: LoraConfig | None = DEFAULT_LORA,
        trainable: tuple[str, ...] = (),
        head: HeadOptions = DEFAULT_HEAD,
        prompt: str = "{instruction}",
        text_first: bool = False,
        loss: LossOptions = DEFAULT_LOSS,
        optim: OptimConfig = DEFAULT_OPTIM,
        neutral_instruction: str = "go to the object",
        language_blind: bool = False,
        encode_batch_size: int = 256,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(vlm, dict):
            vlm = as_dataclass(PretrainedVLM if "model_path" in vlm else TinyVLM, vlm)
        lora = lora_config(lora)
        head = as_dataclass(HeadOptions, head)
        self.loss_options, self.optim = as_dataclass(LossOptions, loss), as_dataclass(OptimConfig, optim)
        grounding = [k for k in ("grounding_weight", "waypoint_grounding_weight") if getattr(self.loss_options, k) > 0]
        for name in grounding:
            if head.pooling != "grounded":
                raise ValueError(
                    f"loss.{name} > 0 trains the head's grounded pool: set head.pooling to 'grounded' "
                    f"(it is {head.pooling!r})"
                )
            if not isinstance(vlm, TinyVLM):
                raise ValueError(
                    f"loss.{name} > 0 needs to know which image token covers a pixel, known here for "
                    "the tiny VLMs only (thinkjepa.thinker.vlm.image_token_index); got a pretrained VLM"
                )
        if self.loss_options.waypoint_grounding_weight > 0 and head.queries < 2:
            raise ValueError(
                f"loss.waypoint_grounding_weight > 0 trains the grounded pool's second query: set head.queries "
                f">= 2 (it is {head.queries})"
            )
        # Plain values only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "world_model": str(world_model) if not isinstance(world_model, JEPA) else "<in memory>",
                "vlm": asdict(vlm),
                "lora": None if lora is None else lora_settings(lora),
                "trainable": list(trainable),
                "head": plain(asdict(head)),
                "prompt": prompt,
                "text_first": text_first,
                "loss": asdict(self.loss_options),
                "optim": asdict(self.optim),
                "neutral_instruction": neutral_instruction,
                "language_blind": language_blind,
                "encode_batch_size": encode_batch_size,
                "init_from": init_from,
            }
        )
        self.vlm_spec, self.encode_batch_size = vlm, encode_batch_size
        self.neutral_instruction, self.language_blind = neutral_instruction, language_blind
        wm, _ = world_model_part(world_model)
        self.thinker = build_thinker(wm, vlm, lora, trainable, head, prompt, text_first, init_from).train()
        self.val_metrics = SubgoalMetrics()
        # Lightning checkpoints hold the trained weights only; on_load_checkpoint checks the key set.
        self.strict_loading = False
        self._latents: dict[str, dict[str, torch.Tensor]] = {}
        self._candidates: dict[int, torch.Tensor] = {}
        self._encoded_from: dict[str, Any] = {}

    # -- one-off encoding of every latent the run needs ------------------------------------------
    @torch.no_grad()
    def _encode(self, arrays: Iterable[np.ndarray]) -> torch.Tensor:
        """Target latents ``(N, D)`` of the frames in ``arrays`` (fixed-size encoder batches)."""
        wm = self.thinker.world_model
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        latents = encode_fixed_batches(lambda x: wm.target_encode(x.to(device)), arrays, self.encode_batch_size)
        return torch.from_numpy(latents) if len(latents) else torch.empty(0, self.thinker.latent_dim)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not hasattr(dm, "train_set"):
            raise ValueError(
                "ThinkerModule needs a datamodule with train_set/val_set (thinkjepa.train.thinker_data.ThinkerDataModule)"
            )
        wm = self.thinker.world_model
        wm_size, data_size = getattr(wm, "image_size", None), getattr(dm, "image_size", None)
        if wm_size is not None and data_size is not None and wm_size != data_size:
            raise ValueError(
                f"data frames are {data_size}px but the world model {self.hparams.world_model} takes {wm_size}px"
            )
        if isinstance(wm, torch.nn.Module):
            wm.to(self.trainer.strategy.root_device)
        for split, ds in (("train", dm.train_set), ("val", dm.val_set)):
            if ds is None or self._encoded_from.get(split) is ds:
                continue
            n = len(ds)
            self._encoded_from[split] = ds
            self._latents[split] = {
                "current": self._encode(stacked(ds.current_image, range(n), self.encode_batch_size)),  # (N, D)
                "target": self._encode(stacked(ds.subgoal_image, range(n), self.encode_batch_size)),  # (N, D)
            }
            rank_zero_info(
                f"thinker {split}: {n} samples from {len(ds.episodes)} episodes, source={ds.source}, "
                f"{ds.fallback_fraction:.1%} fall back to {ds.fallback_k} steps ahead"
            )
            if split == "val":
                sizes: list[int] = []  # each episode's candidate count, recorded as its frames are read
                candidates = (ds.candidate_images(e) for e in ds.episodes)  # (N_e, H, W, 3) each
                parts = self._encode(_counted(candidates, sizes)).split(sizes)
                self._candidates = dict(zip(ds.episodes, parts, strict=True))

    def _lookup(self, split: str, key: str, index: torch.Tensor) -> torch.Tensor:
        return self._latents[split][key][index.cpu()].to(self.device)

    def _missions(self, missions: list[str]) -> list[str]:
        return [self.neutral_instruction] * len(missions) if self.language_blind else list(missions)

    def _z_current(self, split: str, index: torch.Tensor) -> torch.Tensor | None:
        return self._lookup(split, "current", index) if self.thinker.head.residual else None

    # -- training --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        target = self._lookup("train", "target", batch["index"])  # (B, D)
        hidden, inputs = self.thinker.encode(batch["image"], self._missions(batch["mission"]))
        image_mask = self.thinker.image_mask(inputs)
        z = self.thinker.head(hidden, inputs["attention_mask"], self._z_current("train", batch["index"]), image_mask)
        energy = (z - target).pow(2).sum(-1).mean()
        loss = energy
        logs = {"train/energy": energy.detach()}
        grounding = [
            (query, weight, key, name)
            for query, (weight, key, name) in enumerate(
                [
                    (self.loss_options.grounding_weight, "target_pixel", "grounding"),
                    (self.loss_options.waypoint_grounding_weight, "waypoint_pixel", "waypoint_grounding"),
                ]
            )
            if weight > 0 and key in batch
        ]
        # once for every query (a routed head runs its router here)
        scores = self.thinker.head.grounding_scores(hidden, image_mask) if grounding else None
        for query, weight, key, name in grounding:
            term, accuracy = self._grounding_loss(scores[:, query], image_mask, batch[key], batch["image"].shape[1])
            if term is not None:
                loss = loss + weight * term
                logs.update({f"train/{name}": term.detach(), f"train/{name}_top1": accuracy})
        if self.loss_options.infonce_weight > 0:
            d2 = (z.unsqueeze(1) - target.unsqueeze(0)).pow(2).sum(-1)  # (B, B)
            # In units of the batch's mean squared target-target distance, so τ does not depend on the
            # world model's latent scale.
            scale = torch.cdist(target, target).pow(2).mean().detach().clamp_min(1e-12)
            logits = -d2 / (scale * self.loss_options.temperature)
            infonce = F.cross_entropy(logits, torch.arange(len(z), device=z.device))
            loss = loss + self.loss_options.infonce_weight * infonce
            logs["train/infonce"] = infonce.detach()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite thinker loss at step {self.global_step}: {logs}")
        copy = self._lookup("train", "current", batch["index"])
        logs["train/energy_copy"] = (copy - target).pow(2).sum(-1).mean()
        self.log_dict({"train/loss": loss.detach(), **logs}, on_step=True, on_epoch=False)
        return loss

    def grounding_labels(self, pixels: torch.Tensor, frame_size: int) -> torch.Tensor:
        """``(B,)`` index of the image token covering each ``(row, col)`` of ``pixels`` in a ``frame_size`` frame
        (-1 for an unknown pixel, given as ``-1``)."""
        spec = self.vlm_spec
        return pixel_tokens(pixels, frame_size, spec.image_size, spec.patch_size, spec.merge).to(self.device)

    def _grounding_loss(
        self,
        scores: torch.Tensor,
        image_mask: torch.Tensor,
        pixels: torch.Tensor,
        frame_size: int,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Cross-entropy of one grounded query's ``scores`` (``(B, S)``, the head's ``grounding_scores`` row,
        -inf off the image) over image tokens against the token covering ``pixels``."""
        token = self.grounding_labels(pixels, frame_size)
        known = token >= 0
        if not known.any():
            return None, None
        n_image = int(image_mask[0].sum())
        per_token = scores[image_mask].view(len(scores), n_image)[known]  # (K, N_image), in token order
        loss = F.cross_entropy(per_token, token[known])
        accuracy = (per_token.argmax(-1) == token[known]).float().mean()
        return loss, accuracy

    # -- validation ------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        index, images = batch["index"], batch["image"]
        target, copy = self._lookup("val", "target", index), self._lookup("val", "current", index)
        z_current = copy if self.thinker.head.residual else None
        z = self.thinker(images, self._missions(batch["mission"]), z_current)
        blind = self.thinker(images, [self.neutral_instruction] * len(index), z_current)
        candidates = [self._candidates[int(e)] for e in batch["episode"]]
        self.val_metrics.update(z, copy, blind, target, candidates)
        self.log("val/energy", (z - target).pow(2).sum(-1).mean(), on_epoch=True, batch_size=len(index))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log_dict({f"val/{k}": v for k, v in values.items()})
        self.log("val/top1_pbar", values["top1"], prog_bar=True, logger=False)

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        return adamw_warmup_cosine(self.parameters(), o.lr, o.weight_decay, o.warmup_steps, o.min_lr_ratio,
                                   self.trainer.estimated_stepping_batches)

    # -- checkpoints -----------------------------------------------------------------------------
    def _trained_keys(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self._trained_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        expected, got = self._trained_keys(), set(checkpoint["state_dict"])
        if expected != got:
            raise ValueError(
                f"Thinker checkpoint does not match this ThinkerModule's trained weights: missing "
                f"{sorted(expected - got)[:10]}, unexpected {sorted(got - expected)[:10]} "
                "(same vlm / lora / trainable / head settings as the run that wrote it?)"
            )

    @rank_zero_only
    def on_fit_end(self) -> None:
        if self.trainer.fast_dev_run:
            return
        path = save_thinker(
            self.thinker,
            Path(self.trainer.default_root_dir) / "thinker",
            world_model_fingerprint=world_model_fingerprint(self.thinker.world_model),
            base_vlm=None if isinstance(self.vlm_spec, TinyVLM) else _absolute(self.vlm_spec.model_path),
            run_config=dict(self.hparams),
        )
        print(f"thinker exported to {path}")


def _counted(arrays: Iterable[np.ndarray], sizes: list[int]) -> Iterator[np.ndarray]:
    """Pass ``arrays`` through, appending each one's length to ``sizes`` as it is read."""
    for a in arrays:
        sizes.append(len(a))
        yield a

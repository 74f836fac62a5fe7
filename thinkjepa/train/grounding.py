"""Grounding pretraining: teach the thinker's VLM where an instruction points, before any world model exists.

A thinker has two things to learn: *where* the instruction sends the agent (which object, which doorway next)
and *what the world model's latent of being there* looks like. Only the second needs the world model. The first
is the expensive one — on GoTo a random-init VLM needs thousands of steps to find the named object among 484
cells — and it can be learned from the level generator alone (:func:`~thinkjepa.data.grounding.grounding_samples`:
fresh layouts every step, the agent anywhere, an object named as the level names it). So it is a stage of its
own, run before (or beside) the world model's training, the way real VLMs come pretrained before they are
finetuned into a thinker.

:class:`GroundingPretrainModule` trains a tiny VLM (every weight) with a per-image-token read-out on the last
layer, exactly the thinker head's grounded pool (:class:`~thinkjepa.thinker.head.PyramidLatentHead`): a layer
norm and a linear scorer with two queries — query 0 scores each token as the named object's, query 1 as the one
where the agent stands at the next waypoint — plus a 4-way linear read-out of the agent's heading there. Loss:
cross-entropy of each query over the image tokens against the true token, and of the heading at the true
waypoint token. The instruction comes before the image (``text_first``) so that every image token attends to it.

With ``router`` the waypoint query and the heading come from a :class:`~thinkjepa.thinker.router.GridRouter`
over the token grid instead: on GoTo the linear read-out learned the object but not the route (the next
waypoint as often with a neutral instruction as with the true one), the router learned it within 200 steps.
``init_from`` starts such a phase from an earlier phase's export.

At the end of ``fit`` the run is exported to ``<default_root_dir>/vlm`` (atomically; the format and its loaders
are in :mod:`thinkjepa.thinker.grounded`):

    config.json, model.safetensors, processor files   the VLM in ``save_pretrained`` layout (loads with
                                                      :func:`~thinkjepa.thinker.vlm.load_vlm`)
    grounding.json                                    format, the tiny-VLM spec, prompt, text order, level
    grounding.safetensors                             the read-out: ``norm.*``, ``scorer.*``, and ``heading.*``
                                                      or ``router.*``

A :class:`~thinkjepa.train.thinker.ThinkerModule` with the same ``vlm`` spec starts from it with
``init_from: <that directory>``: the VLM's weights are copied before any LoRA adapters go on
(:func:`load_grounded_vlm`), and the head's grounded pool (its first layer's norm and scorer) starts as this
read-out (:func:`load_grounded_readout`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from thinkjepa.configs import as_dataclass
from thinkjepa.data.grounding import GroundingSamples, Naming, check_naming, grounding_samples
from thinkjepa.optim import OptimConfig, adamw_warmup_cosine
from thinkjepa.thinker.grounded import copy_readout, load_grounded_vlm, save_grounded_vlm
from thinkjepa.thinker.router import GridRouter, RouterOptions
from thinkjepa.thinker.thinker import Thinker, chat_text, processor_inputs
from thinkjepa.thinker.vlm import TinyVLM, build_tiny_vlm, pixel_tokens

DEFAULT_VLM = TinyVLM()
DEFAULT_OPTIM = OptimConfig(weight_decay=0.0, warmup_steps=100, min_lr_ratio=0.1)
VAL_SEED, VAL_LAYOUTS = 10_000_000, 100_000
"""The held-out samples come from layouts ``VAL_SEED`` on; training batches never draw from the first
``VAL_LAYOUTS`` of them."""


class GroundingStream(IterableDataset):
    """Endless batches of fresh grounding samples: batch ``i`` comes from layouts ``seed + i * batch_size`` on.

    Under DDP rank ``r`` of ``world_size`` takes every ``world_size``-th batch: its ``k``-th step reads batch
    ``(start + k) * world_size + r``, so the ranks never share a batch and a run resumed at step ``start``
    continues with layouts it has not seen (DataLoader workers split a rank's steps round-robin, as the
    loader reads them). Yields dicts with ``image`` (uint8 ``(B, H, W, 3)``), ``mission`` (B strings),
    ``target_pixel``, ``waypoint_pixel`` (``(B, 2)`` row, col) and ``heading`` (``(B,)``, the agent's direction
    at the waypoint).
    """

    def __init__(self, level: str, batch_size: int, frame_size: int, naming: Naming, seed: int, start: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"GroundingStream: rank {rank} is not in [0, world_size={world_size})")
        self.level, self.batch_size, self.frame_size, self.naming = level, batch_size, frame_size, naming
        self.seed, self.start, self.rank, self.world_size = seed, start, rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        workers, step = (info.num_workers, info.id) if info is not None else (1, 0)
        while True:
            i = (self.start + step) * self.world_size + self.rank
            first = self.seed + i * self.batch_size
            if first < VAL_SEED + VAL_LAYOUTS and first + self.batch_size > VAL_SEED:
                raise ValueError(f"training batch {i} would draw layouts {first}.. of the held-out ones ({VAL_SEED}..)")
            samples = grounding_samples(self.level, self.batch_size, seed=first,
                                        image_size=self.frame_size, naming=self.naming)
            yield as_batch(samples)
            step += workers


def as_batch(samples: GroundingSamples) -> dict[str, Any]:
    """The tensors a :class:`GroundingPretrainModule` step reads from ``samples``."""
    return {
        "image": torch.from_numpy(samples.frames),
        "mission": list(samples.missions),
        "target_pixel": torch.from_numpy(samples.target_pixels),
        "waypoint_pixel": torch.from_numpy(samples.waypoint_pixels),
        "heading": torch.from_numpy(samples.waypoints[:, 2].copy()),
    }


class GroundingDataModule(pl.LightningDataModule):
    """Generated grounding samples of one level: a fresh stream for training, fixed held-out layouts to validate.

    Args:
        level: A BabyAI level with objects to go to (``BabyAI-GoTo-v0``).
        frame_size: Side of the rendered frames: the world model's image size, so that the processor resizes
            them exactly as it will for the thinker.
        batch_size: Samples per step (each batch is one call of the generator).
        naming: ``level`` names objects as the level does ("go to a red box" when there are several), ``unique``
            only objects no other shares colour and type with.
        val_samples: Held-out samples, from layouts ``10,000,000`` on (at most 100,000).
        seed: First training layout; training batch ``i`` draws from ``seed + i * batch_size`` on, and a resumed
            run starts at its step's batch (see :class:`GroundingStream`; each DDP rank reads its own batches).
        num_workers: DataLoader workers for the training stream (0: generate in the main process).
    """

    def __init__(self, level: str = "BabyAI-GoTo-v0", frame_size: int = 88, batch_size: int = 32,
                 naming: Naming = "level", val_samples: int = 400, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        check_naming(naming)
        if batch_size < 1 or not 1 <= val_samples <= VAL_LAYOUTS:
            raise ValueError(f"GroundingDataModule needs batch_size >= 1 and 1 <= val_samples <= {VAL_LAYOUTS}, "
                             f"got {batch_size=} {val_samples=}")
        self.level, self.frame_size, self.batch_size, self.naming = level, frame_size, batch_size, naming
        self.val_samples, self.seed, self.num_workers = val_samples, seed, num_workers
        self.val_set: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        if self.val_set is None:
            self.val_set = as_batch(grounding_samples(self.level, self.val_samples, seed=VAL_SEED,
                                                      image_size=self.frame_size, naming=self.naming))

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        start, rank, world = (t.global_step, t.global_rank, t.world_size) if t is not None else (0, 0, 1)
        # global_step is restored before the loaders are built, so a resumed run starts at its step's batch
        stream = GroundingStream(self.level, self.batch_size, self.frame_size, self.naming, self.seed, start,
                                 rank, world)
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        v, n, b = self.val_set, self.val_samples, self.batch_size
        chunks = [{k: x[i : i + b] for k, x in v.items()} for i in range(0, n, b)]
        return DataLoader(chunks, batch_size=None)


class GroundingPretrainModule(pl.LightningModule):
    """Pretrains a tiny VLM's image tokens to say where an instruction points (see the module docstring).

    Args:
        vlm: The tiny VLM spec; the thinker that starts from this run must use the same one.
        prompt: Text shown with the image; ``{instruction}`` is replaced by the mission.
        text_first: The instruction before the image (a causal LM's image tokens then attend to it).
        neutral_instruction: Validation also scores this instruction in place of the true one: grounding is
            the gap between the two.
        heading_weight: Weight of the heading cross-entropy (the two token cross-entropies weigh 1).
        optim: AdamW with linear warm-up and cosine decay (:class:`~thinkjepa.optim.OptimConfig`).
        router: :class:`~thinkjepa.thinker.router.RouterOptions` fields: score the waypoint (and read its heading)
            with a :class:`~thinkjepa.thinker.router.GridRouter` over the token grid instead of linearly per
            token; the thinker's head then needs the same ``head.router``.
        init_from: A grounded export to start from: its VLM and read-out (norm, the object scorer, and the
            waypoint scorer / heading / router where this run has the same kind). A router this run adds to
            an export without one starts fresh.
        schedule_steps: Length of the cosine schedule, if not the run's ``max_steps`` (a run stopped part way
            through a longer schedule is reproduced by setting both).
    """

    def __init__(self, vlm: TinyVLM = DEFAULT_VLM, prompt: str = "{instruction}", text_first: bool = True,
                 neutral_instruction: str = "go to the object", heading_weight: float = 1.0,
                 optim: OptimConfig = DEFAULT_OPTIM, router: dict | None = None, init_from: str | None = None, schedule_steps: int | None = None) -> None:
        super().__init__()
        spec = as_dataclass(TinyVLM, vlm)
        self.optim = as_dataclass(OptimConfig, optim)
        router = None if router is None else asdict(RouterOptions(**router))
        if schedule_steps is not None and schedule_steps < 1:
            raise ValueError(f"schedule_steps must be >= 1 or None, got {schedule_steps}")
        self.save_hyperparameters({"vlm": asdict(spec), "prompt": prompt, "text_first": text_first,
                                   "neutral_instruction": neutral_instruction, "heading_weight": heading_weight,
                                   "optim": asdict(self.optim), "router": router, "init_from": init_from,
                                   "schedule_steps": schedule_steps})
        if "{instruction}" not in prompt:
            raise ValueError(f"prompt {prompt!r} must contain '{{instruction}}'")
        self.spec = spec
        self.vlm, self.processor = build_tiny_vlm(**asdict(spec))
        self.vlm.train()
        lm_head = self.vlm.get_output_embeddings()
        if lm_head is not None and lm_head.weight is not self.vlm.get_input_embeddings().weight:
            lm_head.requires_grad_(False)  # no loss reads the vocabulary logits (DDP refuses unused parameters)
        hidden = self.vlm.config.get_text_config().hidden_size
        self.norm = nn.LayerNorm(hidden)
        # The thinker head's grounded pool: query 0 the object's token, query 1 the waypoint's (linear or routed).
        self.scorer = nn.Linear(hidden, 1 if router is not None else 2)
        self.router = GridRouter(hidden, **router) if router is not None else None
        self.heading = nn.Linear(hidden, 4) if router is None else None  # the router reads the heading itself
        self._texts: dict[str, str] = {}
        if init_from is not None:
            load_grounded_vlm(self.vlm, init_from, spec, prompt, text_first)
            copy_readout(init_from, self.norm, self.scorer, self.router, self.heading)

    def _text(self, instruction: str) -> str:
        if instruction not in self._texts:
            self._texts[instruction] = chat_text(self.processor, self.hparams.prompt, instruction, self.hparams.text_first)
        return self._texts[instruction]

    def token_scores(self, images: torch.Tensor, missions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 2, N)`` object / waypoint scores and ``(B, N, 4)`` heading logits of the ``N`` image tokens."""
        Thinker.check_inputs(images, missions)
        inputs = processor_inputs(self.processor, images, [self._text(m) for m in missions], self.device, self.vlm.dtype)
        out = self.vlm(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1, return_dict=True)
        image = inputs["input_ids"] == self.vlm.config.image_token_id
        h = self.norm(out.hidden_states[-1].float())[image].view(len(images), -1, self.norm.normalized_shape[0])
        if self.router is None:
            return self.scorer(h).transpose(1, 2), self.heading(h)
        obj = self.scorer(h)[..., 0]
        way, heading, _ = self.router(h, obj)
        return torch.stack([obj, way], dim=1), heading

    def labels(self, pixels: torch.Tensor, frame_size: int) -> torch.Tensor:
        """Image token covering each ``(row, col)`` of a ``frame_size`` frame."""
        s = self.spec
        return pixel_tokens(pixels, frame_size, s.image_size, s.patch_size, s.merge).to(self.device)

    def _losses(self, batch: dict[str, Any], missions: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores, heading = self.token_scores(batch["image"], missions)
        size = batch["image"].shape[1]
        obj, way = self.labels(batch["target_pixel"], size), self.labels(batch["waypoint_pixel"], size)
        if (obj < 0).any() or (way < 0).any():
            raise ValueError("a grounding label falls outside the image: frames and VLM image size disagree")
        rows = torch.arange(len(obj), device=self.device)
        true_heading = batch["heading"].to(self.device)
        losses = {
            "object": F.cross_entropy(scores[:, 0], obj),
            "waypoint": F.cross_entropy(scores[:, 1], way),
            "heading": F.cross_entropy(heading[rows, way], true_heading),
        }
        guess_obj, guess_way = scores[:, 0].argmax(-1), scores[:, 1].argmax(-1)
        guess_heading = heading[rows, guess_way].argmax(-1)
        hits = {
            "object_top1": (guess_obj == obj).float().mean(),
            "waypoint_top1": (guess_way == way).float().mean(),
            "waypoint_state_top1": ((guess_way == way) & (guess_heading == true_heading)).float().mean(),
        }
        loss = losses["object"] + losses["waypoint"] + self.hparams.heading_weight * losses["heading"]
        return loss, {**losses, **hits}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, logs = self._losses(batch, batch["mission"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite grounding loss at step {self.global_step}: {logs}")
        self.log_dict({"train/loss": loss.detach(), **{f"train/{k}": v.detach() for k, v in logs.items()}},
                      on_step=True, on_epoch=False, batch_size=len(batch["mission"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        n = len(batch["mission"])
        for name, missions in (("", batch["mission"]), ("_neutral", [self.hparams.neutral_instruction] * n)):
            _, logs = self._losses(batch, missions)
            self.log_dict({f"val/{k}{name}": v for k, v in logs.items() if k.endswith("top1")}, batch_size=n,
                          sync_dist=True)  # under DDP each rank validates its share of the chunks

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        return adamw_warmup_cosine(self.parameters(), o.lr, o.weight_decay, o.warmup_steps, o.min_lr_ratio,
                                   self.hparams.get("schedule_steps") or self.trainer.estimated_stepping_batches)

    def readout_state(self) -> dict[str, torch.Tensor]:
        """The read-out's weights as stored in ``grounding.safetensors``."""
        parts = {"norm": self.norm, "scorer": self.scorer, "heading": self.heading, "router": self.router}
        parts = {name: part for name, part in parts.items() if part is not None}
        return {f"{p}.{k}": v.detach().float().contiguous().cpu() for p, m in parts.items() for k, v in m.state_dict().items()}

    def export(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the VLM, its processor and the read-out to the directory ``path``, atomically
        (:func:`~thinkjepa.thinker.grounded.save_grounded_vlm`)."""
        config = {"vlm": asdict(self.spec), "prompt": self.hparams.prompt, "text_first": self.hparams.text_first,
                  "router": self.hparams.get("router"), **(extra or {})}
        return save_grounded_vlm(path, self.vlm, self.processor, self.readout_state(), config)

    @rank_zero_only
    def on_fit_end(self) -> None:
        if self.trainer.fast_dev_run:
            return
        dm = self.trainer.datamodule
        extra = {"steps": self.global_step,
                 "data": {k: getattr(dm, k, None) for k in ("level", "frame_size", "naming", "batch_size", "seed")},
                 "val": {k: round(float(v), 4) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}}
        path = self.export(Path(self.trainer.default_root_dir) / "vlm", extra)
        rank_zero_info(f"grounded VLM exported to {path}")

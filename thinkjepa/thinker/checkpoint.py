"""Thinker checkpoints: a directory, written atomically, that rebuilds a :class:`Thinker` without pickles.

Layout::

    <dir>/
      config.json           format, prompt, head arguments, base-VLM source, world model fingerprint + latent dim,
                            the names of the trained non-adapter VLM weights, and the run's resolved arguments
      adapter/              LoRA adapter in peft's save_pretrained format (absent when trained without LoRA)
      trained.safetensors   head weights ("head.*") and other trained VLM weights ("vlm.*", base-model names)
      processor/            the processor (tokenizer, image processor, chat template)
      base/                 the base VLM (save_pretrained), when it has no other source: random-init tiny models

A thinker's latents only mean something in the latent space of the world model it was trained against, so the
checkpoint records that model's fingerprint and latent size, and :func:`load_thinker` refuses any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from thinkjepa.checkpoint import atomic_directory, read_format_json
from thinkjepa.protocols import WorldModel
from thinkjepa.thinker.head import PyramidLatentHead
from thinkjepa.thinker.lora import base_model
from thinkjepa.thinker.thinker import Thinker
from thinkjepa.thinker.vlm import load_processor, load_vlm_model

FORMAT = "thinkjepa.thinker/1"


def clean_base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights with peft's LoRA layers taken out (``q_proj.base_layer.weight`` -> ``q_proj.weight``)."""
    return {
        k.replace(".base_layer.", "."): v.detach().contiguous()
        for k, v in model.state_dict().items()
        if "lora_" not in k
    }


def save_thinker(
    thinker: Thinker,
    path: str | os.PathLike,
    *,
    world_model_fingerprint: str,
    base_vlm: str | None = None,
    run_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``thinker`` to the directory ``path``, replacing it atomically (temp dir + ``os.replace``).

    Args:
        thinker: The thinker to save.
        path: Target directory.
        world_model_fingerprint: ``fingerprint()`` of the world model whose latents the thinker was trained on.
        base_vlm: Where the base VLM can be loaded from (a local dir or cached Hub id, see ``load_vlm``);
            ``None`` saves the base VLM into the checkpoint (needed for random-init models).
        run_config: The training run's resolved arguments, stored for the record (JSON-serialisable).

    Returns:
        The directory.
    """
    path = Path(path)
    with atomic_directory(path) as tmp:
        base = thinker.base_vlm
        trained = {f"head.{k}": v for k, v in thinker.head.state_dict().items()}
        trained_vlm = sorted(n for n, p in base.named_parameters() if p.requires_grad and "lora_" not in n)
        params = dict(base.named_parameters())
        trained.update({f"vlm.{n}": params[n] for n in trained_vlm})
        save_file(
            {k: v.detach().float().contiguous().cpu() for k, v in trained.items()},
            tmp / "trained.safetensors",
        )
        if isinstance(thinker.vlm, PeftModel):
            thinker.vlm.save_pretrained(tmp / "adapter")
        thinker.processor.save_pretrained(tmp / "processor")
        if base_vlm is None:
            base.save_pretrained(tmp / "base", state_dict=clean_base_state(base))
        config = {
            "format": FORMAT,
            "prompt": thinker.prompt,
            "text_first": thinker.text_first,
            "head": thinker.head.config(),
            "base_vlm": base_vlm,
            "base_dtype": str(base.dtype).removeprefix("torch."),
            "trained_vlm_parameters": trained_vlm,
            "world_model": {"fingerprint": world_model_fingerprint, "latent_dim": thinker.latent_dim},
            "run": run_config or {},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return path


def read_thinker_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a thinker checkpoint directory.

    Raises:
        FileNotFoundError: ``path`` or its ``config.json`` does not exist.
        ValueError: The file is not a thinker checkpoint of a known format.
    """
    return read_format_json(path, "config.json", FORMAT, "thinker checkpoint")


def world_model_fingerprint(world_model: WorldModel) -> str:
    """The identity of a world model's *latent space*, which is what a thinker is trained in.

    Its ``fingerprint()`` method if it has one, else
    :func:`thinkjepa.worldmodel.export.target_encoder_fingerprint` (encoder architecture + target
    encoder weights). The predictor is left out on purpose: stage 2 refits it on frozen latents
    (:mod:`thinkjepa.train.predictor`) without moving any latent, so a thinker trained against the
    stage-1 model stays valid for the stage-2 one, while any change to the encoder is refused.
    """
    method = getattr(world_model, "fingerprint", None)
    if callable(method):
        return str(method())
    from thinkjepa.worldmodel.export import target_encoder_fingerprint

    return target_encoder_fingerprint(world_model)


def check_world_model(
    config: dict[str, Any], world_model: WorldModel, where: str = "thinker checkpoint"
) -> None:
    """Refuse a world model other than the one a thinker was trained against.

    Raises:
        ValueError: Latent sizes or fingerprints differ (the message names both).
    """
    expected = config["world_model"]
    if world_model.latent_dim != expected["latent_dim"]:
        raise ValueError(
            f"World model latent_dim={world_model.latent_dim} but the {where} was trained for "
            f"latent_dim={expected['latent_dim']}"
        )
    got = world_model_fingerprint(world_model)
    if got != expected["fingerprint"]:
        raise ValueError(
            f"World model fingerprint {got!r} differs from the {where}'s {expected['fingerprint']!r}: the thinker's "
            "latents only mean something for the world model it was trained against"
        )


def load_thinker(
    path: str | os.PathLike, world_model: WorldModel | None = None, device: str | torch.device = "cpu"
) -> Thinker:
    """Rebuild a thinker saved by :func:`save_thinker`, in eval mode with every weight frozen.

    Args:
        path: The checkpoint directory.
        world_model: The world model to attach (checked against the recorded fingerprint and latent size);
            a residual-head thinker needs one to ``propose``.
        device: Where to put the thinker.

    Raises:
        FileNotFoundError: No checkpoint at ``path``.
        ValueError: ``world_model`` is not the one the thinker was trained against, or the saved weights do not
            match the rebuilt modules (the message lists the names).
    """
    path = Path(path)
    config = read_thinker_config(path)
    if world_model is not None:
        check_world_model(config, world_model, where=f"thinker checkpoint {str(path)!r}")
    model = load_vlm_model(config["base_vlm"] or path / "base", dtype=config["base_dtype"])
    processor = load_processor(path / "processor")
    if (path / "adapter").is_dir():
        model = PeftModel.from_pretrained(model, path / "adapter")
    head = PyramidLatentHead(**config["head"])
    tensors = load_file(path / "trained.safetensors")
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    params = dict(base_model(model).named_parameters())
    saved_vlm = {k[4:]: v for k, v in tensors.items() if k.startswith("vlm.")}
    unknown = sorted(set(saved_vlm) - set(params))
    if unknown or sorted(saved_vlm) != config["trained_vlm_parameters"]:
        raise ValueError(
            f"{path / 'trained.safetensors'} does not match the VLM: unknown names {unknown}, "
            f"expected exactly {config['trained_vlm_parameters']}"
        )
    with torch.no_grad():
        for name, value in saved_vlm.items():
            params[name].copy_(value)
    thinker = Thinker(model, processor, head, prompt=config["prompt"], world_model=world_model,
                      text_first=bool(config.get("text_first", False)))
    thinker.requires_grad_(False)
    return thinker.to(device).eval()

"""A grounding-pretrained tiny VLM on disk: its format, and how a thinker starts from it.

The export of :class:`~thinkjepa.train.grounding.GroundingPretrainModule` (see that module for what the stage
learns) is a directory:

    config.json, model.safetensors, processor files   the VLM in ``save_pretrained`` layout (loads with
                                                      :func:`~thinkjepa.thinker.vlm.load_vlm`)
    grounding.json                                    format, the tiny-VLM spec, prompt, text order, level
    grounding.safetensors                             the read-out: ``norm.*``, ``scorer.*``, and ``heading.*``
                                                      or ``router.*``

A thinker with the same ``vlm`` spec starts from it (``init_from: <that directory>``): the VLM's weights are
copied before any LoRA adapters go on (:func:`load_grounded_vlm`), and the head's grounded pool (its first
layer's norm and scorer) starts as this read-out (:func:`load_grounded_readout`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from thinkjepa.checkpoint import atomic_directory, load_state_dict_strict, read_format_json
from thinkjepa.thinker.head import PyramidLatentHead
from thinkjepa.thinker.router import GridRouter
from thinkjepa.thinker.vlm import TinyVLM, load_vlm, save_vlm

FORMAT = "thinkjepa.grounded_vlm/1"
CONFIG = "grounding.json"
READOUT = "grounding.safetensors"


def is_grounded_vlm(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a grounded export (it has ``grounding.json``)."""
    return (Path(path) / CONFIG).is_file()


def read_grounded_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``grounding.json`` of a :class:`GroundingPretrainModule` export.

    Raises:
        FileNotFoundError: no export at ``path``.
        ValueError: an unknown format.
    """
    return read_format_json(path, CONFIG, FORMAT, "grounded VLM")


def load_grounded_vlm(model: nn.Module, source: str | os.PathLike, spec: TinyVLM, prompt: str, text_first: bool) -> None:
    """Copy the VLM of a grounded export into ``model``, a bare (no adapters yet) VLM built from ``spec``.

    The export is loaded with ``from_pretrained``. A thinker applies its LoRA adapters (if any) after this,
    so the adapters finetune the grounded weights, as they would a pretrained VLM's.

    Raises:
        ValueError: the export was trained with another VLM spec, prompt or text order (each one named).
        StateDictMismatchError: the weights do not fit (every differing name listed).
    """
    config = read_grounded_config(source)
    mine = {"vlm": asdict(spec), "prompt": prompt, "text_first": text_first}
    differ = [k for k, v in mine.items() if config.get(k) != v]
    if differ:
        raise ValueError(
            f"init_from={source}: the grounded VLM was trained with other "
            + ", ".join(f"{k} ({config.get(k)!r}, this thinker {mine[k]!r})" for k in differ)
        )
    pretrained, _ = load_vlm(source)
    load_state_dict_strict(model, pretrained.state_dict(), f"init_from={source} (VLM)")


def copy_readout(source: str | os.PathLike, norm: nn.LayerNorm, scorer: nn.Linear, router: GridRouter | None,
                 heading: nn.Linear | None = None) -> None:
    """Copy a grounded export's read-out into these modules: the norm, the scorer's first rows (as many as both
    have: 0 the object, 1 a linear waypoint query), the router and the heading read-out where both have one.
    A router here with none in the export starts fresh.

    Raises:
        ValueError: the export routes waypoints and these modules do not, or with other router options.
    """
    config, readout = read_grounded_config(source), load_file(str(Path(source) / READOUT))
    theirs, mine = config.get("router"), None if router is None else asdict(router.options)
    if theirs is not None and theirs != mine:
        raise ValueError(
            f"init_from={source}: its waypoint query is a GridRouter with {theirs}; set the same router options "
            f"here (got {mine})"
        )
    q = min(scorer.out_features, readout["scorer.weight"].shape[0])
    with torch.no_grad():
        norm.load_state_dict({k[5:]: v for k, v in readout.items() if k.startswith("norm.")})
        scorer.weight[:q].copy_(readout["scorer.weight"][:q])
        scorer.bias[:q].copy_(readout["scorer.bias"][:q])
    for name, module in (("router", router if theirs is not None else None), ("heading", heading)):
        state = {k[len(name) + 1:]: v for k, v in readout.items() if k.startswith(name + ".")}
        if module is not None and state:
            load_state_dict_strict(module, state, f"init_from={source} ({name})")


def load_grounded_readout(head: PyramidLatentHead, source: str | os.PathLike, num_states: int) -> None:
    """Start ``head``'s grounded pool as the export's read-out (:func:`copy_readout`: the norm of its first layer,
    the object scorer and the waypoint query, linear or routed). ``num_states``: the VLM's hidden-state count.

    Raises:
        ValueError: the head does not pool ``grounded`` on the last layer (``head.layers[0]`` = -1), where the
            read-out was trained, or its router does not match the export's.
    """
    if head.scorer is None or head.layers[0] % num_states != num_states - 1:
        raise ValueError(
            f"init_from={source}: to start from the grounded read-out the thinker's head must pool 'grounded' with "
            f"the last layer first (head.layers[0] = -1); it has pooling {head.options.pooling!r}, layers {list(head.layers)}"
        )
    copy_readout(source, head.norms[0], head.scorer, head.router)


def save_grounded_vlm(path: str | os.PathLike, vlm: nn.Module, processor: Any, readout: dict[str, torch.Tensor],
                      config: dict[str, Any]) -> Path:
    """Write a grounded export to the directory ``path``, atomically: the VLM and its processor, the read-out's
    weights (``norm.*``, ``scorer.*``, ``heading.*`` / ``router.*``) and ``grounding.json`` (``config`` with the
    format added; it must name ``vlm``, ``prompt``, ``text_first`` and ``router``)."""
    missing = [k for k in ("vlm", "prompt", "text_first", "router") if k not in config]
    if missing:
        raise ValueError(f"a grounded export's config needs {missing}")
    with atomic_directory(path) as tmp:
        save_vlm(vlm, processor, tmp)
        save_file(readout, tmp / READOUT)
        (tmp / CONFIG).write_text(json.dumps({"format": FORMAT, **config}, indent=2, default=str))
    return Path(path)

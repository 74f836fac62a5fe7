"""Building, saving and loading the thinker's vision-language model, through transformers' own classes.

Two sources, one code path afterwards (``AutoModelForImageTextToText`` + the model's processor):

* :class:`TinyVLM` -> :func:`build_tiny_vlm` (:mod:`thinkjepa.thinker.tiny_vlm`): a random-init model of a real architecture (Idefics3, the
  SmolVLM family; Qwen2-VL; Qwen2.5-VL; or Qwen3-VL), each an instance of that family's own transformers class
  with its own processor class, sized for 64x64 BabyAI frames, with a word-level tokenizer trained locally
  (``tokenizer.py``). Nothing is downloaded, so CI and CPU machines can train it in minutes, and tests of a
  real-VLM recipe run it with a stand-in of the recipe's own family.
* :class:`PretrainedVLM` -> :func:`load_vlm`: weights a user already has, from a local directory or the local
  Hugging Face cache, always with ``local_files_only=True`` (this package never downloads).

Every processor gets a chat template, so prompts are built the same way for tiny and real models
(``processor.apply_chat_template`` with one image and one text part).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

from thinkjepa.thinker.tiny_vlm import (  # noqa: F401  (re-exported: one place to import VLMs from)
    TinyVLM,
    VLMKind,
    build_tiny_vlm,
    image_token_index,
    pixel_tokens,
)

TEXT_MODEL_LORA_TARGETS = (
    r".*\.(text_model|language_model)\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)
"""peft ``target_modules`` regex (full match) for the attention and MLP linears of the *language* model only:
Idefics3/SmolVLM call it ``model.text_model``, Qwen2-VL/Qwen2.5-VL/Qwen3-VL ``model.language_model``; the vision
tower (``vision_model`` / ``visual``) never matches."""

VISION_TOWER_LORA_TARGETS = (
    r".*\.(vision_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc(1|2))"
    r"|visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|linear_fc1|linear_fc2|gate_proj|up_proj|down_proj)))"
)
"""peft ``target_modules`` regex (full match) for the attention and MLP linears of the *vision tower's* blocks:
Idefics3's ``model.vision_model.encoder.layers.N`` (``q/k/v/out_proj``, ``fc1/fc2``) and the Qwen families'
``model.visual.blocks.N`` (``attn.qkv/proj``; MLP ``fc1/fc2`` in Qwen2-VL, ``gate/up/down_proj`` in Qwen2.5-VL,
``linear_fc1/2`` in Qwen3-VL). The patch embedding, the connector / patch mergers and the language model never
match."""

TEXT_AND_VISION_LORA_TARGETS = f"(?:{TEXT_MODEL_LORA_TARGETS})|(?:{VISION_TOWER_LORA_TARGETS})"
"""Both of the above: adapters on the language model's and the vision tower's attention and MLP linears."""

@dataclass(frozen=True)
class PretrainedVLM:
    """A VLM with weights on this machine (see :func:`load_vlm`)."""

    model_path: str
    """Local directory (``save_pretrained`` layout) or a Hub id already in the local HF cache."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype once loaded (float32 + ``precision: bf16-mixed`` keeps the adapters' updates exact)."""
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of the processor's saved settings, e.g. ``{do_image_splitting: false}`` for SmolVLM or
    ``{min_pixels: 50176, max_pixels: 50176}`` for Qwen2.5-VL: BabyAI frames are small, one tile is enough."""


def save_vlm(model: PreTrainedModel, processor: ProcessorMixin, path: str | os.PathLike) -> Path:
    """``save_pretrained`` the model (safetensors) and its processor into one directory.

    Returns:
        The directory.
    """
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _resolve(path: str | os.PathLike) -> str:
    """A local directory as an absolute string, or a Hub id to look up in the local cache."""
    source = str(path)
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file() and not (local / "processor_config.json").is_file():
            raise FileNotFoundError(
                f"VLM directory {source!r} has no config.json (expected save_pretrained layout)"
            )
        return str(local)
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"No VLM at {source!r}: the path does not exist")
    return source


def _not_cached(source: str, err: OSError) -> FileNotFoundError:
    from huggingface_hub.constants import HF_HUB_CACHE

    return FileNotFoundError(
        f"No VLM at {source!r}: not a local directory and not in the local Hugging Face cache ({HF_HUB_CACHE}); "
        f"download it there first or pass a directory ({err.__class__.__name__}: {str(err)[:200]})"
    )


def load_vlm_model(path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> PreTrainedModel:
    """Load only the model of :func:`load_vlm` (same arguments and errors); eval mode."""
    source = _resolve(path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    try:
        return AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=True).eval()
    except OSError as err:
        if Path(source).exists():
            raise
        raise _not_cached(source, err) from err


def load_processor(path: str | os.PathLike, **overrides: Any) -> ProcessorMixin:
    """Load only the processor of :func:`load_vlm` (same path rules and errors); ``overrides`` replace saved
    settings of the processor or its image processor (``do_image_splitting=False``)."""
    source = _resolve(path)
    try:
        return AutoProcessor.from_pretrained(source, local_files_only=True, **overrides)
    except OSError as err:
        if Path(source).exists():
            raise
        raise _not_cached(source, err) from err


def load_vlm(
    path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    processor_kwargs: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a VLM and its processor from a local directory or the local HF cache; never downloads.

    Args:
        path: A directory in ``save_pretrained`` layout, or a Hub id (``"HuggingFaceTB/SmolVLM-256M-Instruct"``)
            whose files are already in the local Hugging Face cache.
        dtype: Weights' dtype (``torch.bfloat16`` or ``"bfloat16"``); ``None`` keeps the saved dtype.
        processor_kwargs: Overrides of the processor's saved settings (see :func:`load_processor`).

    Returns:
        ``(model, processor)``; ``model`` is in eval mode.

    Raises:
        FileNotFoundError: ``path`` is neither a local directory nor cached (the message names ``path``).
    """
    return load_vlm_model(path, dtype), load_processor(path, **(processor_kwargs or {}))

"""Building, saving and loading the thinker's vision-language model, through transformers' own classes.

Two sources, one code path afterwards (``AutoModelForImageTextToText`` + the model's processor):

* :class:`TinyVLM` -> :func:`build_tiny_vlm`: a random-init model of a real architecture (Idefics3, the
  SmolVLM family; or Qwen2-VL) sized for 64x64 BabyAI frames, with a word-level tokenizer trained locally
  (``tokenizer.py``). Nothing is downloaded, so CI and CPU machines can train it in minutes.
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
    Idefics3Config,
    Idefics3ImageProcessor,
    Idefics3Processor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from thinkjepa.thinker.tokenizer import train_word_tokenizer

VLMKind = Literal["idefics3", "qwen2_vl"]

TEXT_MODEL_LORA_TARGETS = (
    r".*\.(text_model|language_model)\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)
"""peft ``target_modules`` regex (full match) for the attention and MLP linears of the *language* model only:
Idefics3/SmolVLM call it ``model.text_model``, Qwen2-VL/Qwen2.5-VL ``model.language_model``; the vision tower
(``vision_model`` / ``visual``) never matches."""

_TINY_SPECIAL_TOKENS: dict[str, list[str]] = {
    "idefics3": ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"],
    "qwen2_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
}
_TINY_IMAGE_PLACEHOLDER = {"idefics3": "<image>", "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>"}


def _tiny_chat_template(image_placeholder: str) -> str:
    return (
        "{% for message in messages %}{% for part in message['content'] %}"
        f"{{% if part['type'] == 'image' %}}{image_placeholder}"
        "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}"
    )


@dataclass(frozen=True)
class TinyVLM:
    """A random-init VLM built from a config (see :func:`build_tiny_vlm`)."""

    kind: VLMKind = "idefics3"
    """Architecture: ``idefics3`` (SmolVLM family) or ``qwen2_vl``."""
    hidden_size: int = 64
    """Width of the language model."""
    num_layers: int = 2
    """Decoder layers of the language model."""
    num_heads: int = 4
    """Attention heads (language model and vision tower)."""
    vision_hidden_size: int = 64
    """Width of the vision tower."""
    vision_layers: int = 2
    """Layers of the vision tower."""
    image_size: int = 64
    """Side of the (square) images the processor resizes to."""
    patch_size: int = 8
    """Vision patch side; ``(image_size / (patch_size * merge))**2`` image tokens reach the language model."""
    merge: int = 2
    """Patches merged into one language-model token, per side: 2 (2x2, as SmolVLM and Qwen2-VL do) or 1 (one
    token per patch: with patches the size of a grid cell, one token per cell)."""
    seed: int = 0
    """Seed of the random init: the same spec always gives the same weights."""


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


def build_tiny_vlm(
    kind: VLMKind = "idefics3",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_hidden_size: int = 64,
    vision_layers: int = 2,
    image_size: int = 64,
    patch_size: int = 8,
    merge: int = 2,
    seed: int = 0,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build a tiny random-init VLM and its processor (word-level BabyAI tokenizer, no image splitting).

    Args:
        kind: ``idefics3`` or ``qwen2_vl``.
        hidden_size: Language-model width; must divide by ``num_heads``.
        num_layers: Language-model decoder layers.
        num_heads: Attention heads (half as many key/value heads in the language model).
        vision_hidden_size: Vision-tower width.
        vision_layers: Vision-tower layers.
        image_size: Images are resized to ``image_size x image_size``.
        patch_size: Vision patch side.
        merge: ``merge x merge`` patches merge into one language-model token (Idefics3's pixel-shuffle
            scale factor, Qwen2-VL's spatial merge size).
        seed: Seed of the random init.

    Returns:
        ``(model, processor)``; ``model`` is in eval mode.
    """
    if kind not in _TINY_SPECIAL_TOKENS:
        raise ValueError(f"Unknown tiny VLM kind {kind!r}; expected one of {sorted(_TINY_SPECIAL_TOKENS)}")
    if merge < 1 or image_size % (merge * patch_size):
        raise ValueError(
            f"image_size={image_size} must be a multiple of merge * patch_size={merge * patch_size} (merge >= 1)"
        )
    head_dim = hidden_size // num_heads
    if head_dim * num_heads != hidden_size or head_dim % 2:
        raise ValueError(
            f"hidden_size={hidden_size} must split into num_heads={num_heads} heads of even size"
        )
    tokenizer = train_word_tokenizer(special_tokens=_TINY_SPECIAL_TOKENS[kind])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _TINY_SPECIAL_TOKENS[kind]}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    if kind == "idefics3":
        config = Idefics3Config(
            text_config=dict(model_type="llama", **text),
            vision_config=dict(
                hidden_size=vision_hidden_size,
                intermediate_size=2 * vision_hidden_size,
                num_hidden_layers=vision_layers,
                num_attention_heads=num_heads,
                image_size=image_size,
                patch_size=patch_size,
            ),
            scale_factor=merge,
            image_token_id=ids["<image>"],
            pad_token_id=tokenizer.pad_token_id,
        )
        image_processor = Idefics3ImageProcessor(
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
            do_image_splitting=False,
        )
        image_seq_len = (image_size // patch_size // merge) ** 2
        processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=image_seq_len)
    else:
        # M-RoPE splits each head's rotary half into (temporal, height, width) sections.
        half = head_dim // 2
        mrope = [half - 2 * (half // 3), half // 3, half // 3]
        config = Qwen2VLConfig(
            text_config=dict(
                **text,
                rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
            ),
            vision_config=dict(
                depth=vision_layers,
                embed_dim=vision_hidden_size,
                hidden_size=hidden_size,
                num_heads=num_heads,
                mlp_ratio=2,
                patch_size=patch_size,
                spatial_merge_size=merge,
                temporal_patch_size=2,
            ),
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        pixels = dict(
            patch_size=patch_size,
            merge_size=merge,
            temporal_patch_size=2,
            min_pixels=image_size**2,
            max_pixels=image_size**2,
        )
        processor = Qwen2VLProcessor(
            Qwen2VLImageProcessor(**pixels), tokenizer, Qwen2VLVideoProcessor(**pixels)
        )
    processor.chat_template = _tiny_chat_template(_TINY_IMAGE_PLACEHOLDER[kind])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    return model.eval(), processor


def image_token_index(
    rows: torch.Tensor, cols: torch.Tensor, image_size: int, patch_size: int, merge: int = 2
) -> torch.Tensor:
    """Which image token of a tiny VLM (:func:`build_tiny_vlm`) covers pixel ``(row, col)``.

    Both tiny kinds merge ``merge x merge`` patches into one language-model token and order the merged
    tokens row by row (Idefics3's pixel shuffle, Qwen2-VL's patch merger), so the token is the pixel's
    ``merge * patch_size`` block in row-major order. Pixels outside the image (e.g. ``-1`` for "none") give -1.
    """
    block = merge * patch_size
    per_row = image_size // block
    inside = (rows >= 0) & (cols >= 0) & (rows < image_size) & (cols < image_size)
    return torch.where(inside, (rows // block) * per_row + cols // block, -1)


def pixel_tokens(pixels: torch.Tensor, frame_size: int, image_size: int, patch_size: int, merge: int = 2) -> torch.Tensor:
    """``(...,)`` image token of a tiny VLM covering each ``(row, col)`` of ``pixels (..., 2)`` given in a
    ``frame_size`` frame, which the processor resizes to ``image_size`` (-1 where a pixel is ``-1``, unknown)."""
    scale = image_size / frame_size
    rows, cols = torch.where(pixels >= 0, (pixels * scale).long(), -1).unbind(-1)
    return image_token_index(rows, cols, image_size, patch_size, merge)


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


def num_text_layers(model: PreTrainedModel) -> int:
    """Decoder layers of the language model (``output_hidden_states`` yields this many + 1 tensors)."""
    return model.config.get_text_config().num_hidden_layers


def text_hidden_size(model: PreTrainedModel) -> int:
    """Width of the language model's hidden states."""
    return model.config.get_text_config().hidden_size

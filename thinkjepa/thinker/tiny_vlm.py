"""Tiny random-init VLMs of real architectures, for CPUs, tests and the BabyAI thinkers.

:class:`TinyVLM` -> :func:`build_tiny_vlm`: Idefics3 (the SmolVLM family), Qwen2-VL, Qwen2.5-VL or Qwen3-VL, each an
instance of that family's own transformers class with its own processor class, sized for small BabyAI frames,
with a word-level tokenizer trained locally (``tokenizer.py``). Nothing is downloaded. :func:`image_token_index`
and :func:`pixel_tokens` say which image token covers a pixel (the grounding losses' labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForImageTextToText,
    Idefics3Config,
    Idefics3ImageProcessor,
    Idefics3Processor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from thinkjepa.thinker.tokenizer import train_word_tokenizer

VLMKind = Literal["idefics3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"]

_QWEN_KINDS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
_QWEN_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_TINY_SPECIAL_TOKENS: dict[str, list[str]] = {
    "idefics3": ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"],
    **{kind: _QWEN_SPECIAL_TOKENS for kind in _QWEN_KINDS},
}
# Every Qwen family shows an image as <|vision_start|>, the image's <|image_pad|> tokens, <|vision_end|>.
_TINY_IMAGE_PLACEHOLDER = {
    "idefics3": "<image>",
    **{kind: "<|vision_start|><|image_pad|><|vision_end|>" for kind in _QWEN_KINDS},
}


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
    """Architecture: ``idefics3`` (SmolVLM family), ``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``."""
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
    """Vision patch side; ``(image_size / (patch_size * merge))**2`` image tokens reach the language model (the
    real models use 16 for SmolVLM and Qwen3-VL, 14 for Qwen2-VL and Qwen2.5-VL)."""
    merge: int = 2
    """Patches merged into one language-model token, per side: 2 (2x2, as SmolVLM and the Qwen families do) or
    1 (one token per patch: with patches the size of a grid cell, one token per cell)."""
    seed: int = 0
    """Seed of the random init: the same spec always gives the same weights."""


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

    Each kind is an instance of the real family's transformers class (``Idefics3ForConditionalGeneration``,
    ``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``)
    with that family's processor class and image placeholder, so a tiny model exercises the same code paths
    (vision tower, token merging, M-RoPE, Qwen2.5-VL's windowed attention, Qwen3-VL's deepstack) as the real one.

    Args:
        kind: ``idefics3``, ``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``.
        hidden_size: Language-model width; must divide by ``num_heads``.
        num_layers: Language-model decoder layers.
        num_heads: Attention heads (half as many key/value heads in the language model).
        vision_hidden_size: Vision-tower width.
        vision_layers: Vision-tower layers.
        image_size: Images are resized to ``image_size x image_size``.
        patch_size: Vision patch side.
        merge: ``merge x merge`` patches merge into one language-model token (Idefics3's pixel-shuffle
            scale factor, the Qwen families' spatial merge size).
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
        config, processor = _tiny_qwen(
            kind, tokenizer, ids, text, head_dim, num_heads, vision_hidden_size, vision_layers, image_size,
            patch_size, merge,
        )
    processor.chat_template = _tiny_chat_template(_TINY_IMAGE_PLACEHOLDER[kind])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    return model.eval(), processor


def _tiny_qwen(
    kind: VLMKind,
    tokenizer: Any,
    ids: dict[str, int],
    text: dict[str, Any],
    head_dim: int,
    num_heads: int,
    vision_hidden_size: int,
    vision_layers: int,
    image_size: int,
    patch_size: int,
    merge: int,
) -> tuple[Qwen2VLConfig | Qwen2_5_VLConfig | Qwen3VLConfig, ProcessorMixin]:
    """Config and processor of a tiny Qwen2-VL, Qwen2.5-VL or Qwen3-VL (see :func:`build_tiny_vlm`).

    What differs between the families, as in their transformers configs:

    * Qwen2-VL: a ViT with ``embed_dim`` / ``mlp_ratio``, M-RoPE in contiguous (temporal, height, width) sections.
    * Qwen2.5-VL: a gated-MLP ViT projecting to ``out_hidden_size``, windowed attention in every block but those
      in ``fullatt_block_indexes`` (here the last; ``window_size`` in pixels spans half the token grid per side).
    * Qwen3-VL: learned position embeddings on a ``sqrt(num_position_embeddings)`` grid (here the image's patch
      grid, so nothing is interpolated), deepstack mergers feeding the features of ``deepstack_visual_indexes``
      vision blocks into the first decoder layers (here up to 3, spread as the real models spread them),
      interleaved M-RoPE, an explicit ``head_dim``, and an image processor normalising with mean = std = 0.5.
    """
    # M-RoPE splits each head's rotary half into (temporal, height, width) sections.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    rope = {"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0}
    tokens = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    vision = dict(depth=vision_layers, num_heads=num_heads, patch_size=patch_size, spatial_merge_size=merge,
                  temporal_patch_size=2)
    pixels: dict[str, Any] = dict(
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
        min_pixels=image_size**2,
        max_pixels=image_size**2,
    )
    if kind == "qwen2_vl":
        config = Qwen2VLConfig(
            text_config=dict(**text, rope_parameters=rope),
            vision_config=dict(**vision, embed_dim=vision_hidden_size, hidden_size=text["hidden_size"], mlp_ratio=2),
            **tokens,
        )
        return config, Qwen2VLProcessor(Qwen2VLImageProcessor(**pixels), tokenizer, Qwen2VLVideoProcessor(**pixels))
    vision.update(hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                  out_hidden_size=text["hidden_size"])
    if kind == "qwen2_5_vl":
        block = merge * patch_size
        config = Qwen2_5_VLConfig(
            text_config=dict(**text, rope_parameters=rope),
            vision_config=dict(
                **vision,
                window_size=max(1, image_size // block // 2) * block,
                fullatt_block_indexes=[vision_layers - 1],
            ),
            tie_word_embeddings=False,
            **tokens,
        )
        processor = Qwen2_5_VLProcessor(Qwen2VLImageProcessor(**pixels), tokenizer, Qwen2VLVideoProcessor(**pixels))
        return config, processor
    if kind != "qwen3_vl":
        raise ValueError(f"Unknown tiny Qwen VLM kind {kind!r}; expected one of {list(_QWEN_KINDS)}")
    # Deepstack: Qwen3-VL-2B feeds vision blocks [5, 11, 17] of 24 into decoder layers 0-2.
    n_deep = min(3, text["num_hidden_layers"], max(1, vision_layers - 1))
    step = max(1, vision_layers // (n_deep + 1))
    config = Qwen3VLConfig(
        text_config=dict(**text, head_dim=head_dim, rope_parameters={**rope, "mrope_interleaved": True}),
        vision_config=dict(
            **vision,
            num_position_embeddings=(image_size // patch_size) ** 2,
            deepstack_visual_indexes=[step * (i + 1) - 1 for i in range(n_deep)],
        ),
        tie_word_embeddings=False,
        **tokens,
    )
    pixels.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Qwen3VLProcessor(Qwen2VLImageProcessor(**pixels), tokenizer, Qwen3VLVideoProcessor(**pixels))
    return config, processor


def image_token_index(
    rows: torch.Tensor, cols: torch.Tensor, image_size: int, patch_size: int, merge: int = 2
) -> torch.Tensor:
    """Which image token of a tiny VLM (:func:`build_tiny_vlm`) covers pixel ``(row, col)``.

    Every tiny kind merges ``merge x merge`` patches into one language-model token and orders the merged
    tokens row by row (Idefics3's pixel shuffle; in the Qwen families the shared ``Qwen2VLImageProcessor`` lays
    out each merge group's patches consecutively and the patch merger joins them), so the token is the pixel's
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

"""Helpers shared by the thinker tests (fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from peft import LoraConfig

from thinkjepa.thinker.head import PyramidLatentHead
from thinkjepa.thinker.lora import apply_lora, set_trainable
from thinkjepa.thinker.thinker import Thinker
from thinkjepa.thinker.vlm import TEXT_MODEL_LORA_TARGETS, build_tiny_vlm
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig

IMAGE_SIZE = 88
KINDS = ("idefics3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
CONNECTOR = {
    "idefics3": r"model\.connector",
    "qwen2_vl": r"model\.visual\.merger",
    "qwen2_5_vl": r"model\.visual\.merger",
    "qwen3_vl": r"model\.visual\.(merger|deepstack_merger_list)",  # the deepstack mergers feed the LM too
}
"""Per tiny kind, a ``set_trainable`` pattern (``re.search``) for what projects vision features into the LM."""


def tiny_world_model(latent_dim: int = 16, seed: int = 0) -> JEPA:
    """A real (untrained) JEPA small enough to encode hundreds of frames per second on one core."""
    torch.manual_seed(seed)
    enc = EncoderConfig(
        image_size=IMAGE_SIZE, patch_size=22, latent_dim=latent_dim, embed_dim=32, depth=1, num_heads=2
    )
    return JEPA(enc, PredictorConfig(hidden_dim=32, depth=1)).eval().requires_grad_(False)


def tiny_thinker(kind: str, world_model: JEPA, residual: bool = True, lora: bool = True) -> Thinker:
    """A tiny thinker: LoRA on the language model, the connector trainable, a pyramid head over 2 layers."""
    model, processor = build_tiny_vlm(kind)  # 64 px: the processor resizes the 88 px frames
    if lora:
        model = apply_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=TEXT_MODEL_LORA_TARGETS))
    set_trainable(model, [CONNECTOR[kind]])
    head = PyramidLatentHead([-1, 1], hidden_size=64, latent_dim=world_model.latent_dim, residual=residual)
    return Thinker(model, processor, head, world_model=world_model)


def frames(n: int = 3, seed: int = 0) -> torch.Tensor:
    """``uint8 (n, 88, 88, 3)`` random frames (the size of the tiny recipes' BabyAI data)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, generator=g)

"""Image encoder: any timm Vision Transformer, pooled and projected to the latent vector.

The latent is a single vector ``z (B, D)``, not a grid of tokens. That is a deliberate choice for
this project's world: a BabyAI state (agent cell and heading, door states, objects) is a handful of
discrete facts, which one vector holds easily. A vector keeps every consumer cheap and simple: the
planner evaluates B·N candidates per step with an MLP predictor instead of a token transformer, the
planning cost is a plain distance, and the thinker regresses one vector.

How the tokens become that vector matters. Pooling (class token or mean) averages a frame whose
differences from the next frame are a few pixels (the agent's cell) into features that hardly vary
across frames: measured on BabyAI frames at init, the class token's across-batch std is 0.02 vs
0.14 for patch tokens, and VICReg training then collapsed to effective rank ~1. The default
``flatten`` read-out is a linear map of *every* token, so each cell keeps its own weights into the
latent; it is the vector analogue of the patch-token latents DINO-WM plans with.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of the context/target encoder.

    Attributes:
        model_name: Any timm ViT name, e.g. ``vit_tiny_patch16_224`` or ``vit_small_patch16_224``.
        image_size: Side of the square input images in pixels.
        patch_size: ViT patch size in pixels; one BabyAI cell per patch works well.
        latent_dim: Size D of the latent vector.
        embed_dim: Override the ViT width (None keeps the timm default).
        depth: Override the number of blocks (None keeps the timm default).
        num_heads: Override the number of attention heads (None keeps the timm default).
        global_pool: How the ViT's tokens become one vector: ``flatten`` (a linear read-out of every
            token, the default), ``token`` (class token) or ``avg`` (mean over patches).
        drop_path_rate: Stochastic depth rate.
    """

    model_name: str = "vit_tiny_patch16_224"
    image_size: int = 64
    patch_size: int = 8
    latent_dim: int = 128
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    global_pool: str = "flatten"
    drop_path_rate: float = 0.0


class ViTEncoder(nn.Module):
    """timm ViT backbone + linear projection: ``uint8 (B, H, W, 3) -> (B, D)``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        overrides = {
            k: getattr(config, k) for k in ("embed_dim", "depth", "num_heads") if getattr(config, k) is not None
        }
        if config.global_pool not in ("flatten", "token", "avg"):
            raise ValueError(f"encoder.global_pool must be flatten, token or avg, got {config.global_pool!r}")
        self.flatten = config.global_pool == "flatten"
        try:
            self.backbone = timm.create_model(
                config.model_name,
                pretrained=False,
                img_size=config.image_size,
                patch_size=config.patch_size,
                num_classes=0,
                global_pool="" if self.flatten else config.global_pool,
                drop_path_rate=config.drop_path_rate,
                **overrides,
            )
        except RuntimeError as err:  # timm raises RuntimeError for unknown names
            raise ValueError(f"encoder.model_name={config.model_name!r}: {err}") from err
        width = self.backbone.num_features
        if self.flatten:
            width *= self.backbone.patch_embed.num_patches + self.backbone.num_prefix_tokens
        self.proj = nn.Linear(width, config.latent_dim)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` -> ``float (B, 3, H, W)`` in [-1, 1], checking the size."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images shaped (B, H, W, 3), got {tuple(images.shape)}")
        size = self.config.image_size
        if images.shape[1] != size or images.shape[2] != size:
            raise ValueError(
                f"image size {tuple(images.shape[1:3])} does not match the encoder's "
                f"image_size={size}; re-collect the data or change encoder.image_size"
            )
        x = images.permute(0, 3, 1, 2).float()
        return x.div_(127.5).sub_(1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images) if images.dtype == torch.uint8 else images
        if self.flatten:
            return self.proj(self.backbone.forward_features(x).flatten(1))  # (B, (1+P)·C) -> (B, D)
        return self.proj(self.backbone(x))  # (B, D)

"""The thinker: ``z* = head(VLM_LoRA(image_t, instruction))``, a subgoal in the world model's latent space.

Implements :class:`thinkjepa.protocols.Thinker`. The VLM runs once per query with
``output_hidden_states=True``; :class:`~thinkjepa.thinker.head.PyramidLatentHead` pools several of its layers.

The frozen world model is *referenced*, not owned: it is not a submodule, so it is neither in this module's
``state_dict`` nor moved by ``.to()``. A residual head needs it in :meth:`Thinker.propose` to get ``z_t``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel, ProcessorMixin

from thinkjepa.protocols import WorldModel
from thinkjepa.thinker.head import PyramidLatentHead
from thinkjepa.thinker.lora import base_model


def chat_text(processor: ProcessorMixin, prompt: str, instruction: str, text_first: bool = False) -> str:
    """The chat-templated user turn showing one image and ``prompt`` with ``instruction`` filled in
    (the instruction before the image when ``text_first``), ready for the processor."""
    parts = [{"type": "image"}, {"type": "text", "text": prompt.format(instruction=instruction)}]
    message = {"role": "user", "content": parts[::-1] if text_first else parts}
    return processor.apply_chat_template([message], add_generation_prompt=True, tokenize=False)


def processor_inputs(
    processor: ProcessorMixin, images: torch.Tensor, texts: list[str], device: torch.device | str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The processor's padded batch for ``uint8 (B, H, W, 3)`` images and B chat texts, on ``device`` (floating
    point inputs in ``dtype``)."""
    inputs = processor(
        images=list(images.detach().cpu().permute(0, 3, 1, 2)),  # B x (3, H, W)
        text=texts,
        padding=True,
        return_tensors="pt",
    )
    return {k: v.to(device, dtype=dtype if v.is_floating_point() else None) for k, v in inputs.items()}


class Thinker(nn.Module):
    """A VLM (optionally with LoRA adapters) and a latent head proposing world-model subgoals.

    Args:
        vlm: An image-text-to-text transformers model, or a ``peft.PeftModel`` around one.
        processor: Its processor (tokenizer + image processor + chat template).
        head: Pools the VLM's hidden states to ``(B, latent_dim)``.
        prompt: Text shown with the image; ``{instruction}`` is replaced by the mission.
        world_model: The frozen world model whose latent space z* lives in (needed by a residual head).
        text_first: Put the instruction before the image. In a causal language model the image tokens
            then attend to the instruction, so every image token's hidden state can depend on it; with
            the image first (the usual chat order) only the few text tokens see both.
    """

    def __init__(
        self,
        vlm: nn.Module,
        processor: ProcessorMixin,
        head: PyramidLatentHead,
        prompt: str = "{instruction}",
        world_model: WorldModel | None = None,
        text_first: bool = False,
    ) -> None:
        super().__init__()
        if "{instruction}" not in prompt:
            raise ValueError(f"prompt {prompt!r} must contain '{{instruction}}'")
        n_states = base_model(vlm).config.get_text_config().num_hidden_layers + 1
        if any(not -n_states <= i < n_states for i in head.layers):
            raise ValueError(
                f"Head layers {list(head.layers)} out of range: the VLM gives {n_states} hidden states"
            )
        self.vlm, self.head, self.processor, self.prompt = vlm, head, processor, prompt
        self.text_first = text_first
        self._prompts: dict[str, str] = {}
        self.world_model = world_model

    @property
    def latent_dim(self) -> int:
        """Size ``D`` of the proposed latents (the world model's latent size)."""
        return self.head.latent_dim

    @property
    def base_vlm(self) -> PreTrainedModel:
        """The transformers model under any peft wrapper."""
        return base_model(self.vlm)

    @property
    def world_model(self) -> WorldModel | None:
        """The frozen world model giving ``z_t`` to a residual head (a reference, not a submodule)."""
        return self.__dict__.get("_world_model")

    def __setattr__(self, name: str, value: object) -> None:
        if name == "world_model":  # keep it out of _modules (state_dict, .to()) even when it is an nn.Module
            if value is not None and value.latent_dim != self.latent_dim:
                raise ValueError(
                    f"World model latent_dim={value.latent_dim} differs from the thinker head's {self.latent_dim}"
                )
            self.__dict__["_world_model"] = value
        else:
            super().__setattr__(name, value)

    def _text(self, instruction: str) -> str:
        if instruction not in self._prompts:
            self._prompts[instruction] = chat_text(self.processor, self.prompt, instruction, self.text_first)
        return self._prompts[instruction]

    def unknown_words(self, instruction: str) -> list[str]:
        """The words of ``instruction`` this thinker's tokenizer does not know (it would read each as its unknown
        token). Subword tokenizers of real VLMs know every word: for them this is always empty."""
        tokenizer = getattr(self.processor, "tokenizer", None)
        unk = getattr(tokenizer, "unk_token_id", None)
        if unk is None:
            return []
        return [w for w in instruction.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]

    @staticmethod
    def check_inputs(images: torch.Tensor, instructions: list[str]) -> None:
        """Raise ``ValueError`` unless ``images`` is ``uint8 (B, H, W, 3)`` with B ``instructions``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        if len(instructions) != images.shape[0]:
            raise ValueError(f"Got {images.shape[0]} images but {len(instructions)} instructions")

    def prepare(self, images: torch.Tensor, instructions: list[str]) -> dict[str, torch.Tensor]:
        """Processor inputs for ``uint8 (B, H, W, 3)`` images and B instructions, on the head's device."""
        self.check_inputs(images, instructions)
        texts = [self._text(i) for i in instructions]
        return processor_inputs(self.processor, images, texts, self.head.mlp[0].weight.device, self.base_vlm.dtype)

    def forward(
        self, images: torch.Tensor, instructions: list[str], z_current: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Subgoal latents with gradient (training).

        Args:
            images: ``uint8 (B, H, W, 3)`` current frames.
            instructions: B mission strings.
            z_current: ``(B, D)`` world-model target latents of ``images``; required by a residual head.

        Returns:
            ``(B, D)`` float32 subgoal latents z*.
        """
        hidden_states, inputs = self.encode(images, instructions)
        return self.head(hidden_states, inputs["attention_mask"], z_current, self.image_mask(inputs))

    def encode(
        self, images: torch.Tensor, instructions: list[str]
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """The VLM's per-layer hidden states ``(B, S, H)`` for these inputs, and the inputs themselves."""
        inputs = self.prepare(images, instructions)
        out = self.vlm(
            **inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1, return_dict=True
        )
        return out.hidden_states, inputs

    def image_mask(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``bool (B, S)``: which tokens of :meth:`prepare`'s inputs are image tokens."""
        return inputs["input_ids"] == self.base_vlm.config.image_token_id

    @torch.no_grad()
    def propose(self, images: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` images and B instructions -> subgoal latents ``(B, D)`` (no gradient)."""
        self.check_inputs(images, instructions)
        z_current = None
        if self.head.residual:
            if self.world_model is None:
                raise RuntimeError(
                    "This thinker's head is residual (z* = z_t + Δ) and needs the world model for z_t: "
                    "pass world_model= to load_thinker or set thinker.world_model"
                )
            z_current = self.world_model.target_encode(images.to(self.head.mlp[0].weight.device))
        return self(images, instructions, z_current)

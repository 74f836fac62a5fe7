"""What trains in the thinker: LoRA adapters on the language model, plus declared parameter patterns.

Everything else is frozen. The adapters come from a ``peft.LoraConfig`` (by default targeting only the
language model's linears, :data:`~thinkjepa.thinker.vlm.TEXT_MODEL_LORA_TARGETS`; with
:data:`~thinkjepa.thinker.vlm.TEXT_AND_VISION_LORA_TARGETS` the vision tower's blocks too); extra trainable
weights (e.g. the vision connector of a random-init tiny VLM, which has nothing to be "adapted" from) are named
by regular expressions searched in the *base model's* parameter names, so the same pattern works with or
without adapters (``model.connector`` for Idefics3/SmolVLM, ``model.visual.merger`` for Qwen2-VL and
Qwen2.5-VL, ``model.visual.(merger|deepstack_merger_list)`` for Qwen3-VL, whose deepstack mergers also feed
the language model).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel


def base_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (the model itself if there is none)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def apply_lora(model: PreTrainedModel, config: LoraConfig | None) -> PreTrainedModel | PeftModel:
    """Wrap ``model`` with fresh LoRA adapters (``config=None`` returns it unchanged).

    Raises:
        ValueError: ``config.target_modules`` matches no module of ``model`` (the message shows some names).
    """
    if config is None:
        return model
    try:
        return get_peft_model(model, copy.deepcopy(config))  # peft writes into its config
    except ValueError as err:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(
            f"LoRA target_modules={config.target_modules!r} match no module of {type(model).__name__} "
            f"(some linear layers: {linears}): {err}"
        ) from err


def set_trainable(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze ``model`` except its LoRA adapters and the base-model parameters matching ``patterns``.

    Args:
        model: A transformers model, possibly wrapped by :func:`apply_lora`.
        patterns: Regular expressions (``re.search``) over base-model parameter names.

    Returns:
        The base-model names of the trainable parameters, sorted.

    Raises:
        ValueError: A pattern matches no parameter (the message names it and shows some parameter names).
    """
    compiled = [re.compile(p) for p in patterns]
    hits = dict.fromkeys(patterns, 0)
    trained = []
    for name, param in base_model(model).named_parameters():
        matched = [c.pattern for c in compiled if c.search(name)]
        for p in matched:
            hits[p] += 1
        param.requires_grad_(bool(matched) or "lora_" in name)
        if param.requires_grad:
            trained.append(name)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        names = [n for n, _ in base_model(model).named_parameters()]
        raise ValueError(
            f"Trainable patterns {missing} match no parameter; some names: {names[:: max(1, len(names) // 12)]}"
        )
    return sorted(trained)

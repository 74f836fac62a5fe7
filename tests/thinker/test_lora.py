"""What trains: LoRA adapters on the language model, declared patterns and the head; nothing else."""

from __future__ import annotations

import re

import pytest
import torch
from peft import LoraConfig
from thinker_helpers import CONNECTOR, KINDS, frames, tiny_thinker

from thinkjepa.thinker.lora import apply_lora, set_trainable
from thinkjepa.thinker.vlm import (
    TEXT_AND_VISION_LORA_TARGETS,
    TEXT_MODEL_LORA_TARGETS,
    VISION_TOWER_LORA_TARGETS,
    build_tiny_vlm,
)


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_changes_exactly_the_declared_parameters(kind: str, world_model) -> None:
    thinker = tiny_thinker(kind, world_model).train()
    with torch.no_grad():  # leave peft's / the head's zero inits, so every trained weight gets a gradient
        for name, p in thinker.named_parameters():
            if "lora_B" in name or name.startswith("head.mlp.2"):
                p.normal_(0, 0.1)
    before = {k: v.clone() for k, v in thinker.state_dict().items()}
    declared = {n for n, p in thinker.named_parameters() if p.requires_grad}
    assert declared and all("lora_" in n or re.search(CONNECTOR[kind], n) or n.startswith("head.") for n in declared)

    opt = torch.optim.AdamW([p for p in thinker.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    images = frames(4)
    z = thinker(images, ["go to the red ball", "open a door"] * 2, world_model.target_encode(images))
    z.pow(2).sum().backward()
    opt.step()

    after = thinker.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == declared


def test_lora_targets_only_the_language_model() -> None:
    for kind in KINDS:
        model, _ = build_tiny_vlm(kind)
        model = apply_lora(model, LoraConfig(r=2, target_modules=TEXT_MODEL_LORA_TARGETS))
        lora = [n for n, _ in model.named_parameters() if "lora_" in n]
        assert lora and all(".text_model." in n or ".language_model." in n for n in lora), kind
        assert set_trainable(model, []) == sorted(n.removeprefix("base_model.model.") for n in lora)


def test_unmatched_patterns_are_named() -> None:
    model, _ = build_tiny_vlm("idefics3")
    with pytest.raises(ValueError, match=r"\['model\.nope'\] match no parameter"):
        set_trainable(model, ["model.connector", "model.nope"])
    with pytest.raises(ValueError, match="match no module"):
        apply_lora(model, LoraConfig(r=2, target_modules=r".*\.no_such_proj"))


def test_vision_tower_targets_every_block_linear_of_each_family_and_nothing_else() -> None:
    per_block = {"idefics3": 6, "qwen2_vl": 4, "qwen2_5_vl": 5, "qwen3_vl": 4}  # attention + MLP linears
    for kind in KINDS:
        model, _ = build_tiny_vlm(kind)  # 2 vision blocks, 2 decoder layers
        model = apply_lora(model, LoraConfig(r=2, target_modules=TEXT_AND_VISION_LORA_TARGETS))
        adapted = [n.removesuffix(".lora_A.default") for n, _ in model.named_modules() if n.endswith(".lora_A.default")]
        vision = [n for n in adapted if ".vision_model.encoder.layers." in n or ".visual.blocks." in n]
        text = [n for n in adapted if ".text_model.layers." in n or ".language_model.layers." in n]
        assert len(vision) == 2 * per_block[kind] and len(text) == 2 * 7 and len(adapted) == len(vision) + len(text), kind
        only_vision = apply_lora(build_tiny_vlm(kind)[0], LoraConfig(r=2, target_modules=VISION_TOWER_LORA_TARGETS))
        assert sum(n.endswith(".lora_A.default") for n, _ in only_vision.named_modules()) == len(vision), kind

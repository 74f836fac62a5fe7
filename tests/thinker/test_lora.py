"""What trains: LoRA adapters on the language model, declared patterns and the head; nothing else."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from thinker_helpers import CONNECTOR, frames, tiny_thinker

from thinkjepa.thinker.lora import apply_lora, set_trainable
from thinkjepa.thinker.vlm import TEXT_MODEL_LORA_TARGETS, build_tiny_vlm


@pytest.mark.parametrize("kind", ["idefics3", "qwen2_vl"])
def test_one_step_changes_exactly_the_declared_parameters(kind: str, world_model) -> None:
    thinker = tiny_thinker(kind, world_model).train()
    with torch.no_grad():  # leave peft's / the head's zero inits, so every trained weight gets a gradient
        for name, p in thinker.named_parameters():
            if "lora_B" in name or name.startswith("head.mlp.2"):
                p.normal_(0, 0.1)
    before = {k: v.clone() for k, v in thinker.state_dict().items()}
    declared = {n for n, p in thinker.named_parameters() if p.requires_grad}
    assert declared and all("lora_" in n or CONNECTOR[kind] in n or n.startswith("head.") for n in declared)

    opt = torch.optim.AdamW([p for p in thinker.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    images = frames(4)
    z = thinker(images, ["go to the red ball", "open a door"] * 2, world_model.target_encode(images))
    z.pow(2).sum().backward()
    opt.step()

    after = thinker.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == declared


def test_lora_targets_only_the_language_model() -> None:
    for kind in ("idefics3", "qwen2_vl"):
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

"""Every thinker recipe runs through the real CLI with fast_dev_run, with tiny models patched in.

A recipe for a real pretrained VLM runs with a tiny stand-in of the *same family* (the same transformers model
and processor classes, the real model's patch size and merge) saved with ``save_pretrained``, so the recipe's
``model_path`` goes through the real ``from_pretrained`` path, its LoRA targets must exist in that class, and its
processor settings must give the image tokens its comment promises.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from thinker_helpers import frames

from thinkjepa.cli import train
from thinkjepa.thinker.checkpoint import (
    clean_base_state,
    load_thinker,
    save_thinker,
    world_model_fingerprint,
)
from thinkjepa.thinker.vlm import TinyVLM, build_tiny_vlm, load_vlm_model, save_vlm
from thinkjepa.train.grounding import GroundingPretrainModule
from thinkjepa.train.thinker import ThinkerModule

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "thinker"
PRETRAINED_FAMILY = {  # recipe -> the tiny kind of its family and the real model's patch size and merge
    "smolvlm-256m": ("idefics3", dict(image_size=512, patch_size=16, merge=4)),  # SmolVLM-256M: 512 px tiles
    "qwen2.5-vl-3b": ("qwen2_5_vl", dict(image_size=56, patch_size=14, merge=2)),
    "qwen3-vl-2b": ("qwen3_vl", dict(image_size=64, patch_size=16, merge=2)),
}
FAMILY_CLASSES = {  # the real model's own model and processor classes
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
}
IMAGE_TOKENS = 64
"""Image tokens per frame that every real-VLM recipe's processor settings are chosen to give."""


def test_every_real_vlm_recipe_has_a_stand_in_of_its_family() -> None:
    real = {p.stem for p in RECIPES.glob("*.yaml") if "model_path" in yaml.safe_load(p.read_text())["model"]["init_args"]["vlm"]}
    assert real == set(PRETRAINED_FAMILY)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_recipe_fast_dev_run(recipe, world_model_dir, dataset_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the recipes' relative output paths (checkpoint callback) land here
    monkeypatch.setattr(sys, "argv", ["thinkjepa"])
    config = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
    assert config["model"]["class_path"] == "thinkjepa.train.thinker.ThinkerModule"
    argv = [
        "fit",
        "--config",
        str(RECIPES / f"{recipe}.yaml"),
        "--model.init_args.world_model",
        str(world_model_dir),
        "--data.init_args.root",
        str(dataset_dir),
        "--data.init_args.val_levels",  # the test data has other levels than the recipe validates on
        "null",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
        "--trainer.fast_dev_run",
        "true",
        "--trainer.accelerator",
        "cpu",
        "--trainer.precision",
        "32-true",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
    ]
    if recipe in PRETRAINED_FAMILY:  # a tiny model of the same family stands in for the real weights
        kind, geometry = PRETRAINED_FAMILY[recipe]
        model, processor = build_tiny_vlm(kind, **geometry)
        argv += [
            "--model.init_args.vlm.model_path",
            str(save_vlm(model, processor, tmp_path / "vlm")),
            "--model.init_args.head.layers",
            "[-1, 1]",
        ]
    if config["data"]["init_args"].get("grounding_samples"):  # generating the recipe's tens of thousands takes minutes
        argv += ["--data.init_args.grounding_samples", "64"]
    init_args = config["model"]["init_args"]
    if init_args.get("init_from", "").startswith("checkpoints/vlm/"):  # a grounding-pretrained VLM of its spec
        start = GroundingPretrainModule(vlm=TinyVLM(**init_args["vlm"]), prompt=init_args["prompt"],
                                        text_first=init_args["text_first"], router=init_args["head"].get("router"))
        argv += ["--model.init_args.init_from", str(start.export(tmp_path / "start"))]
    elif init_args.get("init_from"):  # a recipe that starts from another thinker: give it one of its architecture
        same = {k: v for k, v in init_args.items() if k not in ("world_model", "init_from")}
        start = ThinkerModule(str(world_model_dir), **same)
        save_thinker(start.thinker, tmp_path / "start", world_model_fingerprint="another-world-model")
        argv += ["--model.init_args.init_from", str(tmp_path / "start")]
    cli = train(argv)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert set(cli.trainer.callback_metrics) >= {"train/loss", "val/top1", "val/top1_copy", "val/top1_blind"}
    if recipe in PRETRAINED_FAMILY:
        _check_stand_in_run(cli.model, PRETRAINED_FAMILY[recipe][0], tmp_path / "vlm", config, tmp_path)


def _check_stand_in_run(module: ThinkerModule, kind: str, stand_in: Path, config: dict, tmp_path: Path) -> None:
    """After one training step of a real-VLM recipe on its family's stand-in: the recipe loaded the stand-in
    (``from_pretrained``) as its own family's classes, its LoRA targets put adapters on every attention and MLP
    linear of the language model and nowhere else, only the adapters and the head trained, the processor gives
    the promised image tokens, and the exported thinker proposes the same subgoals after a reload."""
    thinker = module.thinker
    model_class, processor_class = (getattr(transformers, c) for c in FAMILY_CLASSES[kind])
    assert type(thinker.base_vlm) is model_class and type(thinker.processor) is processor_class
    assert Path(thinker.base_vlm.name_or_path) == stand_in

    saved = load_vlm_model(stand_in)
    lora = config["model"]["init_args"]["lora"]
    targets = {n for n, m in saved.named_modules()
               if isinstance(m, torch.nn.Linear) and re.fullmatch(lora["target_modules"], n)}
    adapted = {n.removesuffix(".lora_A.default") for n, _ in thinker.base_vlm.named_modules() if n.endswith(".lora_A.default")}
    text = thinker.base_vlm.config.get_text_config()
    assert adapted == targets and len(targets) == 7 * text.num_hidden_layers  # q k v o gate up down per layer
    assert all(".text_model." in n or ".language_model." in n for n in adapted)

    trained = {n for n, p in thinker.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or n.startswith("head.") for n in trained)
    base, weights = clean_base_state(thinker.base_vlm), saved.state_dict()
    assert base.keys() == weights.keys() and all(torch.equal(v, weights[k]) for k, v in base.items())  # frozen

    inputs = thinker.prepare(frames(1), ["go to the red ball"])
    assert thinker.image_mask(inputs).sum().item() == IMAGE_TOKENS  # the recipe's processor settings

    # The residual head's zero-init output layer blocks the VLM's gradient at the first step: move it off
    # zero, then every adapter's B (A's gradient is zero while B is) must get a gradient.
    wm = thinker.world_model
    with torch.no_grad():
        thinker.head.mlp[-1].weight.normal_(0, 0.1)
    thinker.zero_grad()
    images, missions = frames(2), ["go to the red ball", "pick up the blue key"]
    thinker(images, missions, wm.target_encode(images)).pow(2).sum().backward()
    params = dict(thinker.named_parameters())
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in trained if "lora_B" in n)
    with torch.no_grad():  # stand in for training: every trained weight off its init
        for n in trained:
            params[n].add_(0.05 * torch.randn_like(params[n]))
    thinker.eval()
    # what on_fit_end writes (fast_dev_run skips it): the base VLM by reference, adapters and head saved
    path = save_thinker(thinker, tmp_path / "thinker", world_model_fingerprint=world_model_fingerprint(wm),
                        base_vlm=str(stand_in))
    assert not (path / "base").exists()
    reloaded = load_thinker(path, wm)
    assert type(reloaded.base_vlm) is model_class and type(reloaded.processor) is processor_class
    assert torch.equal(reloaded.propose(images, missions), thinker.propose(images, missions))


def test_goto_cells_lora_recipe_finetunes_adapters_on_the_grounded_vlm(
    world_model_dir, dataset_dir, tmp_path, monkeypatch
) -> None:
    """babyai-goto-cells-lora.yaml, its VLM at tiny size, 2 steps through the real CLI from a grounded export: the
    grounded weights are the frozen base under the adapters, only the adapters and the head (router included)
    train, and the exported thinker reloads with load_thinker to the same subgoals."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["thinkjepa"])
    recipe = RECIPES / "babyai-goto-cells-lora.yaml"
    init = yaml.safe_load(recipe.read_text())["model"]["init_args"]
    tiny = dict(hidden_size=64, num_layers=2, vision_hidden_size=32, vision_layers=1, image_size=32, patch_size=4)
    spec = TinyVLM(**{**init["vlm"], **tiny})  # one token per 4 px patch: 8 x 8 tokens
    start = GroundingPretrainModule(vlm=spec, prompt=init["prompt"], text_first=init["text_first"],
                                    router=init["head"]["router"])
    with torch.no_grad():  # stand in for pretraining: weights no fresh build of the spec has
        for p in start.parameters():
            p.add_(0.02 * torch.randn_like(p))
    export = start.export(tmp_path / "grounded")
    argv = ["fit", "--config", str(recipe), "--model.init_args.world_model", str(world_model_dir),
            "--model.init_args.init_from", str(export), "--data.init_args.root", str(dataset_dir),
            "--data.init_args.val_levels", "null", "--data.init_args.batch_size", "4",
            "--data.init_args.grounding_samples", "64", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"]
    for key, value in tiny.items():
        argv += [f"--model.init_args.vlm.{key}", str(value)]
    cli = train(argv)
    assert cli.trainer.global_step == 2 and torch.isfinite(cli.trainer.callback_metrics["train/grounding"])
    thinker = cli.model.thinker

    trained = {n for n, p in thinker.named_parameters() if p.requires_grad}
    head = {f"head.{n}" for n, _ in thinker.head.named_parameters()}
    lora = {n for n, _ in thinker.named_parameters() if "lora_" in n}
    assert trained == lora | head and any(n.startswith("head.router.") for n in head)
    adapted = {n.removesuffix(".lora_A.default") for n, _ in thinker.base_vlm.named_modules()
               if n.endswith(".lora_A.default")}
    text = sum(".text_model." in n for n in adapted)
    vision = sum(".vision_model." in n for n in adapted)
    assert (text, vision, len(adapted)) == (7 * 2, 6 * 1, 7 * 2 + 6 * 1)  # q k v o gate up down; q k v out fc1 fc2
    params = dict(thinker.named_parameters())
    assert all(params[n].abs().sum() > 0 for n in lora if "lora_B" in n)  # every adapter moved off its zero init

    grounded = load_vlm_model(export).state_dict()  # the frozen base is the grounded VLM, unchanged by the steps
    base = clean_base_state(thinker.base_vlm)
    assert base.keys() == grounded.keys() and all(torch.equal(v, grounded[k]) for k, v in base.items())

    path = tmp_path / "run" / "thinker"
    assert {p.name for p in path.iterdir()} >= {"adapter", "base", "trained.safetensors"}
    reloaded = load_thinker(path, thinker.world_model)
    thinker.eval()
    images, missions = frames(3), ["go to the red ball", "go to a blue key", "go to the object"]
    assert torch.equal(reloaded.propose(images, missions), thinker.propose(images, missions))

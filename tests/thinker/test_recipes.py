"""Every thinker recipe runs through the real CLI with fast_dev_run, with tiny models patched in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from thinkjepa.cli import train
from thinkjepa.thinker.checkpoint import save_thinker
from thinkjepa.thinker.module import ThinkerModule
from thinkjepa.thinker.pretrain import GroundingPretrainModule
from thinkjepa.thinker.vlm import TinyVLM, build_tiny_vlm, save_vlm

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "thinker"
PRETRAINED_FAMILY = {"smolvlm-256m": "idefics3", "qwen2.5-vl-3b": "qwen2_vl"}


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_recipe_fast_dev_run(recipe, world_model_dir, dataset_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the recipes' relative output paths (checkpoint callback) land here
    monkeypatch.setattr(sys, "argv", ["thinkjepa"])
    config = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
    assert config["model"]["class_path"] == "thinkjepa.thinker.module.ThinkerModule"
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
        model, processor = build_tiny_vlm(PRETRAINED_FAMILY[recipe])
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

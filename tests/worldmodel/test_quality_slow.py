"""The tiny recipe end to end, to its quality bar (slow: ~15-25 min on 2 CPU cores; `make test-slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkjepa.cli import main, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_recipe_trains_a_world_model_far_above_chance(tmp_path):
    data = tmp_path / "data"
    main(["collect", "--config", str(ROOT / "recipes/data/babyai-tiny.yaml"), f"--out={data}"])
    run = tmp_path / "wm"
    common = [f"--data.init_args.root={data}", f"--trainer.default_root_dir={run}",
              f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.callbacks.init_args.dirpath={run}/ckpt",
              "--trainer.enable_progress_bar=false"]
    main(["fit", "--config", str(ROOT / "recipes/wm/babyai-tiny.yaml"), *common])
    cli = train(["validate", "--config", str(ROOT / "recipes/wm/babyai-tiny.yaml"), *common,
                 f"--ckpt_path={run}/ckpt/last.ckpt", "--trainer.limit_val_batches=20"])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    chance = metrics["val/chance"]
    assert metrics["val/top1@8"] > 10 * chance
    assert metrics["val/action_top1"] > 0.5

"""World-model training through the real CLI: recipes, DDP, resume, export, errors before compute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from fit_checks import fit_and_check
from pointmass import write_dataset

from thinkjepa.checkpoint import safe_torch_load
from thinkjepa.cli import main
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, load_world_model, save_world_model

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes/wm/babyai-tiny.yaml")


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    """Point a recipe at the test dataset and a temporary run directory, at a tiny scale."""
    return [
        f"--data.init_args.root={data}", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
        "--trainer.log_every_n_steps=1",
        *extra,
    ]


@pytest.mark.parametrize("recipe", sorted(str(p) for p in (ROOT / "recipes/wm").glob("*.yaml")))
def test_every_wm_recipe_runs_fast_dev_run(recipe, babyai_dataset, tmp_path):
    extra = []
    init_args = yaml.safe_load(Path(recipe).read_text())["model"]["init_args"]
    if init_args["predictor"]["action_space"] == "continuous":  # its own kind of data: a point mass at its size
        babyai_dataset = write_dataset(tmp_path / "pointmass", episodes=6, steps=40, size=init_args["encoder"]["image_size"])
    if init_args.get("init_from"):  # a fine-tuning recipe: start it from a model of its architecture
        start = JEPA(EncoderConfig(**init_args["encoder"]), PredictorConfig(**init_args["predictor"]))
        extra.append(f"--model.init_args.init_from={save_world_model(start, tmp_path / 'start')}")
    fit_and_check(["--config", recipe, *overrides(babyai_dataset, tmp_path, "--trainer.fast_dev_run=1",
                                                  "--trainer.devices=1", "--trainer.strategy=auto", *extra)],
                  ema="model.target_encoder.")


def test_fit_logs_metrics_checkpoints_exports_and_resumes(babyai_dataset, tmp_path):
    args = overrides(babyai_dataset, tmp_path, "--trainer.max_steps=4", "--trainer.val_check_interval=2",
                     "--trainer.limit_val_batches=1", "--trainer.callbacks.init_args.every_n_train_steps=2")
    main(["fit", "--config", TINY, *args])
    ckpt = safe_torch_load(tmp_path / "checkpoints/last.ckpt")
    assert ckpt["global_step"] == 4
    assert any(k.startswith("model.target_encoder.") for k in ckpt["state_dict"])
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert (tmp_path / "babyai-tiny/config.yaml").is_file()
    wm = load_world_model(tmp_path / "world_model")
    assert wm.latent_dim == 128

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "babyai-tiny"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/reg", "val/top1@1", "val/top1@4", "val/top1@8", "val/latent_mse@8",
                "val/chance", "val/z_std_mean", "val/z_effective_rank"):
        assert tag in tags, tag

    # Resume: continues from step 4 with the saved EMA target and optimizer state.
    target_before = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.target_encoder.")}
    resumed = tmp_path / "resumed"
    main(["fit", "--config", TINY, *overrides(babyai_dataset, resumed, "--trainer.max_steps=6",
                                               "--trainer.limit_val_batches=0"),
          f"--ckpt_path={tmp_path / 'checkpoints/last.ckpt'}"])
    after = safe_torch_load(resumed / "checkpoints/last.ckpt")
    assert after["global_step"] == 6
    moved = [not torch.equal(after["state_dict"][k], v) for k, v in target_before.items()]
    assert any(moved) and after["state_dict"].keys() == ckpt["state_dict"].keys()


def test_ddp_two_processes_keep_one_target_encoder_and_write_one_checkpoint(babyai_dataset, tmp_path):
    dump = tmp_path / "dump"
    cmd = [sys.executable, str(ROOT / "tests/worldmodel/ddp_fit.py"), str(dump), "--config", TINY,
           *overrides(babyai_dataset, tmp_path, "--trainer.max_steps=3", "--trainer.limit_val_batches=0",
                      "--trainer.strategy=ddp", "--trainer.devices=2",
                      "--trainer.callbacks.init_args.every_n_train_steps=3")]
    env = {**os.environ, "THINKJEPA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    for key, value in ranks[0]["state"].items():
        torch.testing.assert_close(value, ranks[1]["state"][key], rtol=0, atol=0, msg=key)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step000003.ckpt"]


def test_data_and_model_image_size_mismatch_is_named(babyai_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"data image_size=88 does not match the model's image_size=64"):
        main(["fit", "--config", TINY, *overrides(babyai_dataset, tmp_path, "--trainer.max_steps=1"),
              "--model.init_args.encoder.image_size=64", "--model.init_args.encoder.patch_size=8"])

"""A run killed with SIGKILL mid-epoch resumes to the same state as a run that was never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from thinkjepa.checkpoint import safe_torch_load
from thinkjepa.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes/wm/babyai-tiny.yaml")


def args(data: Path, out: Path, max_steps: int) -> list[str]:
    return [
        "--config", TINY, f"--data.init_args.root={data}", "--data.init_args.batch_size=4",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.callbacks.init_args.dirpath={out}/checkpoints", "--trainer.callbacks.init_args.every_n_train_steps=2",
        f"--trainer.max_steps={max_steps}", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--model.init_args.optim.warmup_steps=2",
    ]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(babyai_dataset, tmp_path):
    main(["fit", *args(babyai_dataset, tmp_path / "straight", 8)])
    straight = safe_torch_load(tmp_path / "straight/checkpoints/last.ckpt")

    killed = tmp_path / "killed"
    env = {**os.environ, "THINKJEPA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests/reliability/killable_fit.py"), "5",
                           *args(babyai_dataset, killed, 8)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = safe_torch_load(killed / "checkpoints/last.ckpt")  # intact despite the kill
    assert last["global_step"] == 4
    assert not list((killed / "checkpoints").glob(".*.tmp"))

    main(["fit", *args(babyai_dataset, killed, 8), f"--ckpt_path={killed / 'checkpoints/last.ckpt'}"])
    resumed = safe_torch_load(killed / "checkpoints/last.ckpt")
    assert resumed["global_step"] == straight["global_step"] == 8
    assert resumed["EpisodeDataModule"] == straight["EpisodeDataModule"]  # same data position
    for key, value in straight["state_dict"].items():  # weights, EMA target included
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    s_opt, r_opt = straight["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    for idx in s_opt:
        torch.testing.assert_close(r_opt[idx]["exp_avg"], s_opt[idx]["exp_avg"], rtol=1e-3, atol=1e-6)
    assert resumed["lr_schedulers"] == straight["lr_schedulers"]

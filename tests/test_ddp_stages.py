"""Every training stage under 2-rank CPU DDP (gloo): both ranks end with the same trained weights, which moved,
and rank 0 writes the one export. Stage 1 and grounding pretraining have their own DDP tests (their data is
split per rank); here the world model's stages 2 and 3 and the thinker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from thinkjepa.data.collect import collect
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig, save_world_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    """A small dataset of one level and a world model of the tiny recipes' image size (random weights)."""
    root = tmp_path_factory.mktemp("ddp")
    data = collect(["BabyAI-GoToLocal-v0"], episodes_per_level=6, out=str(root / "data"), image_size=88,
                   epsilon=0.2, seed=0)
    torch.manual_seed(0)
    enc = EncoderConfig(image_size=88, patch_size=11, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    wm = JEPA(enc, PredictorConfig(hidden_dim=32, depth=1))
    torch.nn.init.normal_(wm.predictor.out[1].weight, std=0.02)
    return Path(data), Path(save_world_model(wm, root / "world_model"))


def stage_args(stage: str, data: Path, wm: Path, out: Path) -> list[str]:
    common = [f"--model.init_args.world_model={wm}", "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
              "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
              f"--trainer.default_root_dir={out}", f"--trainer.callbacks.init_args.dirpath={out}/checkpoints"]
    if stage == "predictor":
        return ["--config", "recipes/predictor/babyai-tiny.yaml", f"--data.init_args.roots=[{data}]",
                "--data.init_args.batch_size=8", *common]
    if stage == "distance":
        return ["--config", "recipes/distance/babyai-gpu.yaml", "--data.init_args.level=BabyAI-GoToLocal-v0",
                "--data.init_args.train_layouts=2", "--data.init_args.val_layouts=1", "--data.init_args.batch_size=32",
                "--data.init_args.val_batches=1", "--model.init_args.rollout_steps=1", *common]
    return ["--config", "recipes/thinker/babyai-tiny.yaml", f"--data.init_args.root={data}",
            "--data.init_args.batch_size=2", "--data.init_args.val_levels=null", *common]


EXPORT = {"predictor": "world_model", "distance": "world_model", "thinker": "thinker"}


@pytest.mark.parametrize("stage", ["predictor", "distance", "thinker"])
def test_two_ranks_train_one_model_and_write_one_export(stage, parts, tmp_path) -> None:
    data, wm = parts
    out, dump = tmp_path / "run", tmp_path / "dump"
    cmd = [sys.executable, str(ROOT / "tests" / "ddp_stage.py"), str(dump), *stage_args(stage, data, wm, out)]
    env = {**os.environ, "THINKJEPA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["steps"] == ranks[1]["steps"] == 2
    assert ranks[0]["after"].keys() == ranks[1]["after"].keys() and ranks[0]["after"]
    for key, value in ranks[0]["after"].items():
        torch.testing.assert_close(value, ranks[1]["after"][key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(v, ranks[0]["before"][k]) for k, v in ranks[0]["after"].items()), "nothing trained"
    assert (out / EXPORT[stage]).is_dir()
    assert not any(p.name.startswith(".") for p in out.iterdir()), "a temporary export was left behind"

"""Grounding pretraining: the stream, the labels, learning, the export and a thinker started from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from thinkjepa.cli import train
from thinkjepa.data.grounding import grounding_samples
from thinkjepa.thinker.checkpoint import load_thinker, save_thinker, world_model_fingerprint
from thinkjepa.thinker.grounded import read_grounded_config
from thinkjepa.thinker.head import HeadOptions
from thinkjepa.thinker.vlm import TinyVLM, load_vlm
from thinkjepa.train.grounding import GroundingDataModule, GroundingPretrainModule, GroundingStream, as_batch
from thinkjepa.train.thinker import LossOptions, ThinkerModule

LEVEL = "BabyAI-GoToLocal-v0"
CELLS = TinyVLM(image_size=88, patch_size=11, merge=1)  # 8 x 8 tokens: one per GoToLocal cell at 88 px
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "vlm"


def test_stream_is_deterministic_and_a_resumed_stream_continues_with_new_layouts() -> None:
    def first(stream: GroundingStream, n: int) -> list[dict]:
        it = iter(stream)
        return [next(it) for _ in range(n)]

    a = first(GroundingStream(LEVEL, 4, 88, "level", seed=0), 3)
    b = first(GroundingStream(LEVEL, 4, 88, "level", seed=0, start=2), 1)
    assert torch.equal(a[2]["image"], b[0]["image"]) and a[2]["mission"] == b[0]["mission"]
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert set(a[0]) == {"image", "mission", "target_pixel", "waypoint_pixel", "heading"}
    # two DDP ranks take alternate batches of the same sequence, from the resumed step on
    ranks = [first(GroundingStream(LEVEL, 4, 88, "level", seed=0, start=1, rank=r, world_size=2), 1)[0] for r in (0, 1)]
    whole = first(GroundingStream(LEVEL, 4, 88, "level", seed=0), 4)
    assert torch.equal(ranks[0]["image"], whole[2]["image"]) and torch.equal(ranks[1]["image"], whole[3]["image"])
    with pytest.raises(ValueError, match="held-out"):
        first(GroundingStream(LEVEL, 4, 88, "level", seed=10_000_000), 1)


def test_labels_are_the_named_objects_and_the_waypoints_cells() -> None:
    module = GroundingPretrainModule(vlm=CELLS)
    s = grounding_samples(LEVEL, 16, seed=3, image_size=88, naming="level")
    batch = as_batch(s)
    row_major = torch.tensor([1, 8])  # cell (x, y) -> token y * 8 + x
    assert torch.equal(module.labels(batch["target_pixel"], 88), torch.from_numpy(s.targets) @ row_major)
    assert torch.equal(module.labels(batch["waypoint_pixel"], 88), torch.from_numpy(s.waypoints[:, :2]) @ row_major)
    scores, heading = module.token_scores(batch["image"], batch["mission"])
    assert scores.shape == (16, 2, 64) and heading.shape == (16, 64, 4)


def test_pretraining_learns_exports_and_starts_a_thinker(world_model_dir, tmp_path) -> None:
    torch.manual_seed(0)
    module = GroundingPretrainModule(vlm=CELLS, optim={"warmup_steps": 1})
    batch = as_batch(grounding_samples(LEVEL, 8, seed=5, image_size=88, naming="level"))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):  # one batch: the read-out must find each sample's object, waypoint and heading
        loss, logs = module._losses(batch, batch["mission"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append({k: logs[k].item() for k in ("object", "waypoint", "heading")})
    uniform = torch.log(torch.tensor(64.0)).item()
    assert losses[0]["object"] == pytest.approx(uniform, rel=0.05)
    for key in ("object", "waypoint"):
        assert losses[-1][key] < 0.5 * losses[0][key], key

    dm = GroundingDataModule(LEVEL, frame_size=88, batch_size=4, val_samples=8)
    trainer = pl.Trainer(max_steps=2, val_check_interval=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    for key in ("train/object_top1", "val/object_top1", "val/object_top1_neutral", "val/waypoint_state_top1"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    export = tmp_path / "vlm"
    config = read_grounded_config(export)
    assert config["vlm"]["merge"] == 1 and config["steps"] == 2 and config["data"]["level"] == LEVEL

    # The export is a save_pretrained VLM: from_pretrained gives the trained weights back.
    loaded, _ = load_vlm(export)
    trained = module.vlm.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.state_dict().items())

    kwargs = dict(vlm=CELLS, lora=None, trainable=(".*",), head=HeadOptions(pooling="grounded", queries=2, layers=(-1, 1)),
                  text_first=True, loss=LossOptions(grounding_weight=1.0, waypoint_grounding_weight=1.0))
    thinker = ThinkerModule(str(world_model_dir), init_from=str(export), **kwargs).thinker
    assert all(torch.equal(v, trained[k]) for k, v in thinker.vlm.state_dict().items())
    assert torch.equal(thinker.head.norms[0].weight, module.norm.weight)
    assert torch.equal(thinker.head.scorer.weight, module.scorer.weight)
    # so the thinker's grounded pool points where the pretrained read-out does
    images, missions = batch["image"][:2], batch["mission"][:2]
    hidden, inputs = thinker.encode(images, missions)
    scores = thinker.head.grounding_scores(hidden, thinker.image_mask(inputs))
    expected, _ = module.token_scores(images, missions)
    torch.testing.assert_close(scores[thinker.image_mask(inputs).unsqueeze(1).expand_as(scores)].view(2, 2, -1), expected)

    # LoRA adapters go on after the copy: they finetune the grounded weights, which start unchanged
    adapted = ThinkerModule(str(world_model_dir), init_from=str(export), **{**kwargs, "lora": {"r": 4}, "trainable": ()})
    adapted.thinker.eval(), thinker.eval()
    torch.testing.assert_close(adapted.thinker.encode(images, missions)[0][-1], thinker.encode(images, missions)[0][-1])
    assert any("lora_" in n for n, p in adapted.named_parameters() if p.requires_grad)

    for change, match in (({"text_first": False}, "text_first"), ({"vlm": TinyVLM(image_size=88, patch_size=11)}, "vlm"),
                          ({"head": HeadOptions(pooling="mean"), "loss": LossOptions()}, "last layer first"),
                          ({"head": HeadOptions(pooling="grounded", layers=(1, -1)), "loss": LossOptions()}, "last layer first")):
        with pytest.raises(ValueError, match=match):
            ThinkerModule(str(world_model_dir), init_from=str(export), **{**kwargs, **change})


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_recipe_fast_dev_run(recipe, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["thinkjepa"])
    argv = ["fit", "--config", str(RECIPES / f"{recipe}.yaml"), "--data.init_args.batch_size", "2",
            "--data.init_args.val_samples", "2", "--trainer.fast_dev_run", "true", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    init = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())["model"]["init_args"]
    if init.get("init_from"):  # a later phase: give it an earlier phase's export of the same VLM
        start = GroundingPretrainModule(vlm=TinyVLM(**init["vlm"]), prompt=init["prompt"], text_first=init["text_first"])
        argv += ["--model.init_args.init_from", str(start.export(tmp_path / "start"))]
    cli = train(argv)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert {"train/object_top1", "val/object_top1", "val/waypoint_top1_neutral"} <= set(cli.trainer.callback_metrics)


class _Batches(pl.Callback):
    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images.append(batch["image"])


def test_a_resumed_run_continues_the_stream_where_the_checkpoint_stopped(tmp_path) -> None:
    def fit(steps: int, ckpt: Path | None = None) -> _Batches:
        seen = _Batches()
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, callbacks=[seen])
        trainer.fit(GroundingPretrainModule(), GroundingDataModule(LEVEL, batch_size=2, val_samples=2), ckpt_path=ckpt)
        if ckpt is None:
            trainer.save_checkpoint(tmp_path / "two.ckpt")
        return seen

    first = fit(2)
    resumed = fit(4, tmp_path / "two.ckpt")
    stream = iter(GroundingStream(LEVEL, 2, 88, "level", seed=0))
    expected = [next(stream)["image"] for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first.images, expected[:2], strict=True))
    assert len(resumed.images) == 2 and all(torch.equal(a, b) for a, b in zip(resumed.images, expected[2:], strict=True))


def test_ddp_ranks_train_on_their_own_batches_and_keep_one_model(tmp_path) -> None:
    dump = tmp_path / "dump"
    small = {"image_size": 88, "patch_size": 11, "merge": 2, "hidden_size": 64, "num_layers": 2, "vision_hidden_size": 64}
    cmd = [sys.executable, str(Path(__file__).with_name("ddp_pretrain.py")), str(dump),
           "--config", str(RECIPES / "babyai-goto-grounding.yaml"), *[f"--model.init_args.vlm.{k}={v}" for k, v in small.items()],
           "--data.init_args.level", LEVEL, "--data.init_args.batch_size=2", "--data.init_args.val_samples=4",
           "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.strategy=ddp", "--trainer.devices=2",
           "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
           f"--trainer.callbacks.init_args.dirpath={tmp_path}/checkpoints"]
    env = {**os.environ, "THINKJEPA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    stream = iter(GroundingStream(LEVEL, 2, 88, "level", seed=0))
    whole = [next(stream)["image"] for _ in range(4)]  # rank r's step k reads batch 2k + r
    for r in (0, 1):
        assert all(torch.equal(a, whole[2 * k + r]) for k, a in enumerate(ranks[r]["images"])), r
    for key, value in ranks[0]["vlm"].items():
        torch.testing.assert_close(value, ranks[1]["vlm"][key], rtol=0, atol=0, msg=key)
    assert read_grounded_config(tmp_path / "vlm")["steps"] == 2


def test_a_router_phase_starts_from_phase_one_and_its_thinker_scores_as_it_does(world_model_dir, tmp_path) -> None:
    torch.manual_seed(0)
    phase1 = GroundingPretrainModule(vlm=CELLS)
    with torch.no_grad():
        phase1.scorer.weight.normal_()  # so that a copied scorer row differs from a fresh one
    first = phase1.export(tmp_path / "phase1")
    router = {"channels": 8, "depth": 3, "dilated": True}
    phase2 = GroundingPretrainModule(vlm=CELLS, router=router, init_from=str(first))
    assert all(torch.equal(v, phase1.vlm.state_dict()[k]) for k, v in phase2.vlm.state_dict().items())
    assert torch.equal(phase2.scorer.weight, phase1.scorer.weight[:1]) and phase2.heading is None

    batch = as_batch(grounding_samples(LEVEL, 8, seed=5, image_size=88, naming="level"))
    scores, heading = phase2.token_scores(batch["image"], batch["mission"])
    assert scores.shape == (8, 2, 64) and heading.shape == (8, 64, 4)
    optimizer = torch.optim.Adam(phase2.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):  # the router learns this batch's waypoints and headings
        loss, logs = phase2._losses(batch, batch["mission"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append({k: logs[k].item() for k in ("waypoint", "heading")})
    for key in ("waypoint", "heading"):
        assert losses[-1][key] < 0.5 * losses[0][key], key
    second = phase2.export(tmp_path / "phase2")
    assert read_grounded_config(second)["router"] == router

    head = HeadOptions(pooling="grounded", queries=2, layers=(-1, 1), router=router)
    kwargs = dict(vlm=CELLS, lora=None, trainable=(".*",), head=head, text_first=True,
                  loss=LossOptions(grounding_weight=1.0, waypoint_grounding_weight=1.0))
    thinker = ThinkerModule(str(world_model_dir), init_from=str(second), **kwargs).thinker
    images, missions = batch["image"][:2], batch["mission"][:2]
    hidden, inputs = thinker.encode(images, missions)
    mask = thinker.image_mask(inputs)
    got = thinker.head.grounding_scores(hidden, mask)[mask.unsqueeze(1).expand(-1, 2, -1)].view(2, 2, -1)
    torch.testing.assert_close(got, phase2.token_scores(images, missions)[0])
    # a thinker checkpoint keeps the router: the reloaded thinker proposes the same subgoals
    module = ThinkerModule(str(world_model_dir), init_from=str(second), **kwargs)
    torch.nn.init.normal_(module.thinker.head.mlp[-1].weight)  # a trained head: z* depends on what it pools
    save_thinker(module.thinker, tmp_path / "thinker", world_model_fingerprint=world_model_fingerprint(module.thinker.world_model))
    loaded = load_thinker(tmp_path / "thinker", world_model=module.thinker.world_model)
    assert loaded.head.router is not None
    module.thinker.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.propose(images, missions), module.thinker.propose(images, missions))

    for other, match in ((HeadOptions(pooling="grounded", queries=2, layers=(-1, 1)), "GridRouter"),
                         (HeadOptions(pooling="grounded", queries=2, layers=(-1, 1), router={"channels": 16}), "GridRouter")):
        with pytest.raises(ValueError, match=match):
            ThinkerModule(str(world_model_dir), init_from=str(second), **{**kwargs, "head": other})
    with pytest.raises(ValueError, match="GridRouter"):  # phase 2 with other router options than the export's
        GroundingPretrainModule(vlm=CELLS, router={"channels": 16}, init_from=str(second))


def test_bad_arguments_are_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="naming"):
        GroundingDataModule(naming="nearest")
    with pytest.raises(ValueError, match="val_samples"):
        GroundingDataModule(val_samples=0)
    with pytest.raises(ValueError, match="rank 2"):
        GroundingStream(LEVEL, 4, 88, "level", seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="instruction"):
        GroundingPretrainModule(prompt="go")
    with pytest.raises(FileNotFoundError, match="No grounded VLM"):
        read_grounded_config(tmp_path)
    (tmp_path / "grounding.json").write_text('{"format": "something/else"}')
    with pytest.raises(ValueError, match="something/else"):
        read_grounded_config(tmp_path)

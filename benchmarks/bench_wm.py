"""World-model training throughput for the shipped recipes.

    python benchmarks/bench_wm.py [--recipes recipes/wm/babyai-tiny.yaml ...] [--steps 10] [--device cpu]

For each recipe it builds the recipe's WorldModelModule exactly as ``thinkjepa fit`` would (via
LightningCLI, nothing run), then times full training steps (encode the window with the context and
target encoders, teacher-forced + rollout loss, backward, AdamW step, EMA update) on synthetic
batches of the recipe's shapes. It prints windows/s and frames/s; on a GPU it also prints the
achieved TFLOP/s (FLOPs counted with torch's FlopCounterMode) and, as a yardstick measured in the
same run, a plain ``torch.compile``d timm ViT forward+backward on the same number of frames.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import lightning.pytorch as pl
import timm
import torch
from lightning.pytorch.cli import LightningCLI
from torch.utils.flop_counter import FlopCounterMode

from thinkjepa.worldmodel.ema import ema_update


def build(recipe: str, device: torch.device) -> tuple[pl.LightningModule, dict]:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    cli = LightningCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        run=False, save_config_callback=None,
        args=["--config", recipe, f"--trainer.accelerator={accelerator}", "--trainer.devices=1",
              "--trainer.strategy=auto", "--trainer.logger=false"],
    )
    data = cli.config["data"]["init_args"]
    precision = cli.config["trainer"].get("precision") or "32-true"
    return cli.model, {"batch_size": data["batch_size"], "window": data["window"], "precision": str(precision)}


def synthetic_batch(model, batch_size: int, window: int, device: torch.device):
    s = model.model.image_size
    frames = torch.randint(0, 256, (batch_size, window, s, s, 3), dtype=torch.uint8, device=device)
    actions = torch.randint(0, model.model.num_actions, (batch_size, window - 1), device=device)
    return frames, actions


def time_steps(step, steps: int, device: torch.device) -> float:
    step()  # warm-up (and compilation)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bench_recipe(recipe: str, steps: int, device: torch.device, batch_size: int | None = None) -> None:
    module, shape = build(recipe, device)
    model = module.model.to(device).train()
    bsz, window = batch_size or shape["batch_size"], shape["window"]
    frames, actions = synthetic_batch(module, bsz, window, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    bf16 = device.type == "cuda" and "bf16" in shape["precision"]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        with autocast:
            loss = model.loss(frames, actions, module.objective)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(model.target_encoder, model.encoder, 0.996)

    dt = time_steps(step, steps, device)
    print(f"{recipe}: batch {bsz} × window {window} ({bsz * window} frames of {model.image_size}px), "
          f"{'bf16' if bf16 else 'fp32'} on {device}")
    print(f"  {dt * 1e3:8.1f} ms/step   {bsz / dt:8.1f} windows/s   {bsz * window / dt:8.1f} frames/s")
    if device.type != "cuda":
        return
    with FlopCounterMode(display=False) as counter:
        step()
    print(f"  {counter.get_total_flops() / dt / 1e12:8.2f} TFLOP/s achieved (world-model step)")
    # Yardstick: a plain compiled timm ViT with the encoder's architecture, forward+backward, same frames.
    enc = model.encoder.config
    kw = {k: getattr(enc, k) for k in ("embed_dim", "depth", "num_heads") if getattr(enc, k) is not None}
    vit = timm.create_model(enc.model_name, img_size=enc.image_size, patch_size=enc.patch_size, num_classes=0,
                            **kw).to(device)
    vit_c = torch.compile(vit)
    x = torch.randn(bsz * window, 3, enc.image_size, enc.image_size, device=device)

    def vit_step() -> None:
        with autocast:
            out = vit_c(x)
        out.float().pow(2).mean().backward()

    dt_vit = time_steps(vit_step, steps, device)
    with FlopCounterMode(display=False) as counter:
        vit_step()
    print(f"  yardstick compiled {enc.model_name} fwd+bwd on {bsz * window} frames: {dt_vit * 1e3:.1f} ms, "
          f"{counter.get_total_flops() / dt_vit / 1e12:.2f} TFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["recipes/wm/babyai-tiny.yaml", "recipes/wm/babyai-vit-s.yaml"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch_size", type=int, default=None, help="override the recipes' batch size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for recipe in args.recipes:
        bench_recipe(recipe, args.steps, torch.device(args.device), args.batch_size)


if __name__ == "__main__":
    main()

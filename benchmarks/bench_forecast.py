"""Forecasting BabyAI GoTo without actions: JEPA-only, VLM-only and VLM-guided predictors (``make bench-forecast``).

From anchor frames of held-out bot episodes with their instructions, each forecaster predicts the world model's
latents 1..16 steps ahead without being told the actions; the agent's cell is decoded from each forecast latent
by a read-out fitted on the training episodes' true latents. Reported: ADE / FDE in cells and the error at each
horizon, with 95 % bootstrap intervals over held-out episodes (rows: see :mod:`thinkjepa.worldmodel.forecast`).

Defaults (2 CPU cores, ~15 min): 400 GoTo bot episodes (seeds 8,000,000+, collected on first use), the world
model of the ``babyai-goto`` release (its GoTo encoder and predictor: stage ``distance-goto``, the agent's world
model once assembled) and its grounded VLM (stage ``vlm-router``, kept in the release), 1500 steps per trained
forecaster. On a GPU: ``--device cuda --episodes 3000 --steps 10000``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def released(stage: str) -> str:
    """Where stage ``stage`` of the ``babyai-goto`` release lies (its own directory, or the agent part it became)."""
    from thinkjepa.release import Release

    return str(Release.open("babyai-goto", verify=False).stage_export(stage))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world_model", default=None, help="exported world model (default: babyai-goto's)")
    parser.add_argument("--vlm", default=None, help="grounded VLM export, the guidance (default: babyai-goto's)")
    parser.add_argument("--data", default="data/bench-forecast", help="GoTo bot episodes (collected if absent)")
    parser.add_argument("--episodes", type=int, default=400, help="bot episodes to collect (the last 20 %% held out)")
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--anchor_stride", type=int, default=4, help="steps between forecast anchors")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each trained forecaster")
    parser.add_argument("--readout_steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neutral", default=None,
                        help="also a guided row whose VLM reads this instruction instead (e.g. 'go to the object')")
    parser.add_argument("--position_weight", type=float, default=0.0,
                        help="also train every forecaster to decode to the agent's cell through the read-out")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write result.json and table.md there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.world_model = args.world_model or released("distance-goto")
    args.vlm = args.vlm or released("vlm-router")

    from thinkjepa.data.collect import collect
    from thinkjepa.data.episodes import EpisodeStore
    from thinkjepa.thinker.guidance import VLMGuidance
    from thinkjepa.worldmodel.export import load_world_model
    from thinkjepa.worldmodel.forecast import markdown_table, run_forecast_benchmark

    start = time.perf_counter()
    data = Path(args.data)
    if not (data / "episodes.json").is_file():
        collect(["BabyAI-GoTo-v0"], args.episodes, data, image_size=88, epsilon=0.2, seed=8_000_000)
    store = EpisodeStore(data)
    wm = load_world_model(args.world_model, device=args.device)
    guidance = VLMGuidance(args.vlm).to(args.device)
    if store.image_size != wm.image_size:
        raise SystemExit(f"{data} holds {store.image_size} px frames; the world model reads {wm.image_size} px")
    result = run_forecast_benchmark(store, wm, guidance, guidance.dim, horizon=args.horizon,
                                    anchor_stride=args.anchor_stride, steps=args.steps,
                                    readout_steps=args.readout_steps, seed=args.seed, neutral=args.neutral,
                                    position_weight=args.position_weight)
    result["seconds"]["total"] = time.perf_counter() - start
    result["settings"] = vars(args)
    table = markdown_table(result)
    print(table)
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=1))
        (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

"""Where a grounding-pretrained VLM finds the next waypoint, and where it does not.

Scores a :class:`~thinkjepa.train.grounding.GroundingPretrainModule` checkpoint's waypoint query on held-out
GoTo layouts (the validation layouts, seed 10,000,000 on), with the true instruction and with the module's
neutral one, split by the kind of waypoint: the final approach (the named object is in the agent's room) or a
door crossing (the route leaves the room), and for door crossings by whether the object's image token comes
before or after the waypoint's in the token order (what a causal language model's waypoint token can attend to).

    python experiments/waypoint_split.py checkpoints/vlm/babyai-goto-router/checkpoints/step001200.ckpt --naming level
"""

from __future__ import annotations

import argparse
import json

import torch

from thinkjepa.data.grounding import grounding_samples
from thinkjepa.train.grounding import VAL_SEED, GroundingPretrainModule, as_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a GroundingPretrainModule Lightning checkpoint (.ckpt)")
    parser.add_argument("--level", default="BabyAI-GoTo-v0")
    parser.add_argument("--naming", default="unique", choices=["unique", "level"])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ckpt = torch.load(args.checkpoint, weights_only=True, map_location="cpu")
    module = GroundingPretrainModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    size = module.spec.image_size
    s = grounding_samples(args.level, args.samples, seed=VAL_SEED, image_size=size, naming=args.naming)
    batch = as_batch(s)
    waypoint = module.labels(batch["waypoint_pixel"], size)
    target = module.labels(batch["target_pixel"], size)
    final = torch.as_tensor(abs(s.waypoints[:, :2] - s.targets).sum(1) == 1)  # next to the object
    groups = {"all": torch.ones_like(final), "final approach": final, "door crossing": ~final,
              "door, object token first": ~final & (target < waypoint), "door, object token later": ~final & (target > waypoint)}
    table = {}
    for name, instruction in (("instruction", None), ("neutral", module.hparams.neutral_instruction)):
        hits = []
        with torch.no_grad():
            for i in range(0, len(s), args.batch):
                missions = batch["mission"][i:i + args.batch]
                missions = missions if instruction is None else [instruction] * len(missions)
                scores, _ = module.token_scores(batch["image"][i:i + args.batch], missions)
                hits.append(scores[:, 1].argmax(-1) == waypoint[i:i + args.batch])
        hit = torch.cat(hits)
        table[name] = {g: {"top1": round(hit[m].float().mean().item(), 4), "n": int(m.sum())} for g, m in groups.items()}
    print(json.dumps(table, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "level": args.level, "naming": args.naming, **table}, f, indent=1)


if __name__ == "__main__":
    main()

"""Guidance vectors for a guided predictor: what a frozen, grounded VLM reads in a frame and an instruction.

A guided predictor ``g(z_t, a_t, c)`` (:class:`~thinkjepa.worldmodel.predictor.PredictorConfig.guidance_dim`)
takes a vector ``c`` per rollout, computed at the thinker's slow rate and held while the predictor steps. Here
``c`` comes from a grounding-pretrained VLM (the export of :class:`~thinkjepa.train.grounding.GroundingPretrainModule`,
the same VLM the thinker starts from): the image tokens' hidden states of several layers ("pyramid"), each
pooled with the attention the grounding read-out puts on the tokens (the softmax of its object scores on the last
layer: where the instruction points), concatenated with the last layer's mean over the image and the attention's
expected position on the token grid (:meth:`VLMGuidance.pointer`). The VLM stays frozen.

    guidance = VLMGuidance("checkpoints/release/babyai-goto/stages/vlm-router")
    c = guidance(frames, missions)          # (B, guidance.dim)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from thinkjepa.checkpoint import atomic_write_text
from thinkjepa.thinker.grounded import READOUT, read_grounded_config
from thinkjepa.thinker.thinker import Thinker, chat_text, processor_inputs
from thinkjepa.thinker.vlm import load_vlm


class VLMGuidance(nn.Module):
    """A frozen grounded VLM as a guidance encoder (see the module docstring).

    Args:
        source: A grounded export directory (``grounding.json`` beside the VLM).
        layers: Hidden states pooled (0 = the embeddings, -1 = the last layer); default: every layer.
    """

    def __init__(self, source: str | os.PathLike, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        config = read_grounded_config(source)
        self.source, self.prompt, self.text_first = str(source), config["prompt"], bool(config["text_first"])
        self.vlm, self.processor = load_vlm(source)
        hidden = self.vlm.config.get_text_config().hidden_size
        states = self.vlm.config.get_text_config().num_hidden_layers + 1
        self.layers = tuple(range(1, states)) if layers is None else tuple(int(i) for i in layers)
        bad = [i for i in self.layers if not -states <= i < states]
        if bad or not self.layers:
            raise ValueError(f"layers {list(self.layers)}: the VLM has {states} hidden states (0 .. {states - 1})")
        readout = load_file(str(Path(source) / READOUT))
        self.norm = nn.LayerNorm(hidden)
        self.norm.load_state_dict({k[5:]: v for k, v in readout.items() if k.startswith("norm.")})
        self.scorer = nn.Linear(hidden, 1)
        with torch.no_grad():  # row 0 of the export's scorer: the named object
            self.scorer.weight.copy_(readout["scorer.weight"][:1])
            self.scorer.bias.copy_(readout["scorer.bias"][:1])
        self.requires_grad_(False)
        self.eval()
        self._texts: dict[str, str] = {}
        digest = hashlib.sha256()
        for name in sorted(p.name for p in Path(source).glob("*.safetensors")):  # the VLM and its read-out
            digest.update(name.encode() + (Path(source) / name).read_bytes())
        self.source_key = digest.hexdigest()[:16]  # names caches of this VLM's vectors

    @property
    def dim(self) -> int:
        """Width of a guidance vector: one pooled hidden state per layer, the last layer's mean, and the pointer."""
        return (len(self.layers) + 1) * self.norm.normalized_shape[0] + 2

    def train(self, mode: bool = True) -> VLMGuidance:  # frozen: always in eval mode
        return super().train(False)

    @torch.no_grad()
    def read(self, images: torch.Tensor | np.ndarray, missions: Sequence[str]
             ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The image tokens' hidden states ``(B, N, H)`` of each of :attr:`layers` (and the last layer, appended),
        and the grounding read-out's attention ``(B, N)`` over the tokens (where the instruction points)."""
        images = images if torch.is_tensor(images) else torch.from_numpy(np.array(images, dtype=np.uint8))
        Thinker.check_inputs(images, list(missions))
        texts = []
        for m in missions:
            if m not in self._texts:
                self._texts[m] = chat_text(self.processor, self.prompt, m, self.text_first)
            texts.append(self._texts[m])
        inputs = processor_inputs(self.processor, images, texts, self.norm.weight.device, self.vlm.dtype)
        out = self.vlm(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1, return_dict=True)
        image = inputs["input_ids"] == self.vlm.config.image_token_id
        b, width = len(images), self.norm.normalized_shape[0]
        tokens = [out.hidden_states[i].float()[image].view(b, -1, width) for i in (*self.layers, -1)]
        return tokens, torch.softmax(self.scorer(self.norm(tokens[-1]))[..., 0], dim=-1)

    def attention(self, images: torch.Tensor | np.ndarray, missions: Sequence[str]) -> torch.Tensor:
        """``(B, N)``: the grounding read-out's softmax over the image tokens."""
        return self.read(images, missions)[1]

    @torch.no_grad()
    def forward(self, images: torch.Tensor | np.ndarray, missions: Sequence[str]) -> torch.Tensor:
        """``(B, dim)`` float32 guidance for ``uint8 (B, H, W, 3)`` frames and their instructions."""
        tokens, attention = self.read(images, missions)
        pooled = [torch.einsum("bn,bnd->bd", attention, t) for t in tokens[:-1]]
        return torch.cat([*pooled, tokens[-1].mean(1), self.pointer(attention)], dim=-1)

    @staticmethod
    def pointer(attention: torch.Tensor) -> torch.Tensor:
        """``(B, 2)``: where the attention over a square token grid points, as ``(x, y)`` in ``[-1, 1]`` (its
        expected token position: a soft arg-max)."""
        side = int(round(attention.shape[-1] ** 0.5))
        if side * side != attention.shape[-1]:
            raise ValueError(f"{attention.shape[-1]} image tokens do not form a square grid")
        axis = torch.linspace(-1.0, 1.0, side, device=attention.device)
        grid = attention.view(-1, side, side)  # (B, rows, cols)
        return torch.stack([(grid.sum(1) * axis).sum(-1), (grid.sum(2) * axis).sum(-1)], dim=-1)


GUIDANCE_FILE = "guidance.json"  # beside a guided world model's export: the VLM its guidance comes from


def write_guidance_record(world_model: str | os.PathLike, guide: VLMGuidance) -> Path:
    """Name ``guide``'s VLM (path, layers, weights' key) beside a guided world model export: what
    :func:`guidance_for` loads with it."""
    path = Path(world_model) / GUIDANCE_FILE
    atomic_write_text(path, json.dumps({"vlm": guide.source, "layers": list(guide.layers),
                                        "source_key": guide.source_key}, indent=1))
    return path


def guidance_for(world_model: str | os.PathLike, device: str = "cpu") -> VLMGuidance | None:
    """The VLM a guided world model export was trained with (its ``guidance.json``), or ``None`` for an unguided
    one. The VLM must be the one it names, unchanged: another is an error naming both."""
    record_path = Path(world_model) / GUIDANCE_FILE
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if not Path(record["vlm"]).is_dir():
        raise FileNotFoundError(f"{record_path} names the guidance VLM {record['vlm']}, which is not there")
    guide = VLMGuidance(record["vlm"], layers=record["layers"]).to(device)
    if guide.source_key != record["source_key"]:
        raise ValueError(f"{record_path}: the VLM at {record['vlm']} is {guide.source_key}, not the "
                         f"{record['source_key']} the world model was trained with")
    return guide

"""The thinker: a LoRA-finetuned VLM + pyramid latent head proposing subgoals in a world model's latent space.

    vlm.py         build a tiny random-init VLM (Idefics3 / Qwen2-VL / Qwen2.5-VL / Qwen3-VL) or load real
                   weights, locally only
    tokenizer.py   the word-level BabyAI tokenizer of the tiny VLMs
    lora.py        LoRA adapters (language model, optionally vision tower) + declared trainable patterns;
                   all else frozen
    head.py        PyramidLatentHead: several VLM layers -> z* (residual on the current latent by default)
    thinker.py     Thinker nn.Module: propose(images, instructions) -> z*  (thinkjepa.protocols.Thinker)
    build.py       build_thinker: VLM + adapters + head for a world model, optionally started from a saved one
    grounded.py    the grounding-pretrained VLM export: format, save and load
    data.py        (frame, mission, subgoal frame) samples, split by episode
    metrics.py     latent error and retrieval of the thinker, the copy baseline and a language-blind thinker
    checkpoint.py  save_thinker / load_thinker: adapter + safetensors + config, world-model fingerprint check

Training lives in :mod:`thinkjepa.train` (``ThinkerModule``, ``GroundingPretrainModule``); nothing here imports
Lightning.
"""

from thinkjepa.thinker.checkpoint import (
    check_world_model,
    load_thinker,
    save_thinker,
    world_model_fingerprint,
)
from thinkjepa.thinker.head import HeadOptions, PyramidLatentHead
from thinkjepa.thinker.lora import apply_lora, set_trainable
from thinkjepa.thinker.metrics import SubgoalMetrics, SubgoalRetrieval
from thinkjepa.thinker.thinker import Thinker
from thinkjepa.thinker.tokenizer import babyai_missions, train_word_tokenizer
from thinkjepa.thinker.vlm import (
    TEXT_AND_VISION_LORA_TARGETS,
    TEXT_MODEL_LORA_TARGETS,
    VISION_TOWER_LORA_TARGETS,
    PretrainedVLM,
    TinyVLM,
    build_tiny_vlm,
    load_processor,
    load_vlm,
    load_vlm_model,
    save_vlm,
)

__all__ = [
    "TEXT_AND_VISION_LORA_TARGETS",
    "TEXT_MODEL_LORA_TARGETS",
    "VISION_TOWER_LORA_TARGETS",
    "HeadOptions",
    "PretrainedVLM",
    "PyramidLatentHead",
    "SubgoalMetrics",
    "SubgoalRetrieval",
    "Thinker",
    "TinyVLM",
    "apply_lora",
    "babyai_missions",
    "build_tiny_vlm",
    "check_world_model",
    "load_processor",
    "load_thinker",
    "load_vlm",
    "load_vlm_model",
    "save_thinker",
    "save_vlm",
    "set_trainable",
    "train_word_tokenizer",
    "world_model_fingerprint",
]

"""A word-level tokenizer for BabyAI missions, trained locally with the ``tokenizers`` library.

The tiny random-init VLMs cannot download a tokenizer, and a BabyAI mission uses a few dozen words
("go to the red ball, then open a door on your left"), so one token per word is both the smallest and the
most learnable choice: each colour and object type is a single embedding the LoRA layers can pick up.

The vocabulary comes from a corpus generated from BabyAI's own grammar (``minigrid.envs.babyai.core.verifier``
surfaces: go to / open / pick up / put ... next to, joined by ", then" / "after you" / "and"), plus any
extra texts (e.g. the missions of a dataset). Unknown words map to ``<unk>``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

COLORS: tuple[str, ...] = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECT_TYPES: tuple[str, ...] = ("ball", "box", "key", "door", "object")
LOCATIONS: tuple[str, ...] = ("", " on your left", " on your right", " in front of you", " behind you")
CONNECTIVES: tuple[str, ...] = (", then ", " after you ", " and ")

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
BASE_SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)


def babyai_missions() -> list[str]:
    """A corpus covering every word of BabyAI's mission grammar (not every mission: that set is huge).

    Returns:
        Mission strings such as ``"pick up a blue key on your left"`` and ``"open the door, then go to a ball"``.
    """
    descs = [
        f"{det} {color}{' ' if color else ''}{obj}{loc}"
        for det, color, obj, loc in itertools.product(("the", "a"), ("", *COLORS), OBJECT_TYPES, LOCATIONS)
    ]
    simple = [f"{verb} {desc}" for verb in ("go to", "open", "pick up") for desc in descs]
    simple += [f"put {a} next to {b}" for a, b in zip(descs, reversed(descs))]
    compound = [a + conn + b for conn in CONNECTIVES for a, b in zip(simple[::7], simple[3::7])]
    return simple + compound


def train_word_tokenizer(
    texts: Iterable[str] | None = None,
    special_tokens: Sequence[str] = (),
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a lower-casing, whitespace/punctuation-splitting word-level tokenizer.

    Args:
        texts: Training texts; ``None`` uses :func:`babyai_missions`. Every word seen gets a token.
        special_tokens: Extra special tokens the VLM's processor needs (image placeholders and the like);
            they get ids right after ``<pad> <unk> <s> </s>`` (ids 0-3) and are never split.
        model_max_length: Longest sequence the tokenizer reports as valid.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/unk/bos/eos set, ready for ``save_pretrained``.
    """
    corpus = list(babyai_missions() if texts is None else texts)
    specials = list(dict.fromkeys([*BASE_SPECIAL_TOKENS, *special_tokens]))
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation: "door," -> "door" ","
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens=[t for t in specials if t not in BASE_SPECIAL_TOKENS],
        model_max_length=model_max_length,
    )

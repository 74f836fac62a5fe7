"""The Thinker nn.Module and its protocol."""

from __future__ import annotations

import pytest
import torch
from thinker_helpers import KINDS, frames, tiny_thinker, tiny_world_model

from thinkjepa.protocols import Thinker as ThinkerProtocol


@pytest.mark.parametrize("kind", KINDS)
def test_propose_gives_world_model_latents_that_depend_on_the_instruction(kind: str, world_model) -> None:
    thinker = tiny_thinker(kind, world_model).eval()
    assert isinstance(thinker, ThinkerProtocol) and thinker.latent_dim == world_model.latent_dim
    images = frames(3)
    z = thinker.propose(images, ["go to the red ball"] * 3)
    assert z.shape == (3, world_model.latent_dim) and z.dtype == torch.float32 and not z.requires_grad
    torch.testing.assert_close(z, world_model.target_encode(images))  # untrained residual head = copy

    torch.nn.init.normal_(thinker.head.mlp[2].weight, std=0.1)
    z_red = thinker.propose(images, ["go to the red ball"] * 3)
    z_key = thinker.propose(images, ["pick up a blue key"] * 3)
    assert not torch.allclose(z_red, z_key)
    torch.testing.assert_close(thinker.propose(images[:1], ["go to the red ball"]), z_red[:1])


def test_text_first_lets_the_image_tokens_read_the_instruction(world_model) -> None:
    """In a causal LM the image tokens see the instruction only when it comes first."""
    thinker = tiny_thinker("idefics3", world_model).eval()
    images = frames(1)

    def image_token_states(instruction: str) -> torch.Tensor:
        inputs = thinker.prepare(images, [instruction])
        out = thinker.vlm(**inputs, output_hidden_states=True, return_dict=True)
        is_image = inputs["input_ids"][0] == thinker.base_vlm.config.image_token_id
        return out.hidden_states[-1][0, is_image]

    torch.testing.assert_close(image_token_states("go to the red ball"), image_token_states("go to the blue key"))
    thinker.text_first, thinker._prompts = True, {}
    assert thinker._text("go to the red ball").index("red") < thinker._text("go to the red ball").index("<image>")
    assert not torch.allclose(image_token_states("go to the red ball"), image_token_states("go to the blue key"))


def test_world_model_is_referenced_not_owned(world_model) -> None:
    thinker = tiny_thinker("idefics3", world_model)
    assert thinker.world_model is world_model and "world_model" not in dict(thinker.named_children())
    assert not any(k.startswith(("world_model", "_world_model")) for k in thinker.state_dict())
    with pytest.raises(ValueError, match="latent_dim=8 differs from the thinker head's 16"):
        thinker.world_model = tiny_world_model(latent_dim=8)


def test_input_errors_name_the_problem(world_model) -> None:
    thinker = tiny_thinker("idefics3", world_model)
    with pytest.raises(ValueError, match=r"uint8 \(B, H, W, 3\), got torch.float32"):
        thinker.propose(frames(2).float(), ["go to the red ball"] * 2)
    with pytest.raises(ValueError, match="2 images but 1 instructions"):
        thinker.propose(frames(2), ["go to the red ball"])
    thinker.world_model = None
    with pytest.raises(RuntimeError, match="needs the world model"):
        thinker.propose(frames(2), ["go to the red ball"] * 2)


def test_plain_head_needs_no_world_model(world_model) -> None:
    thinker = tiny_thinker("qwen2_vl", world_model, residual=False, lora=False)
    thinker.world_model = None
    assert thinker.propose(frames(2), ["open the door"] * 2).shape == (2, world_model.latent_dim)


def test_training_learns_an_instruction_dependent_subgoal(world_model) -> None:
    """Plumbing check: when the subgoal depends only on the mission, a few steps learn it, and the
    language-blind query (one neutral mission) cannot."""
    torch.manual_seed(0)
    thinker = tiny_thinker("idefics3", world_model).train()
    images = frames(4).repeat(2, 1, 1, 1)  # every frame with both missions: only the text tells them apart
    missions = ["go to the red ball"] * 4 + ["pick up the blue key"] * 4
    z_t = world_model.target_encode(images)
    offsets = {m: torch.randn(world_model.latent_dim) for m in set(missions)}
    target = z_t + torch.stack([offsets[m] for m in missions])  # (8, D)
    opt = torch.optim.AdamW([p for p in thinker.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        (thinker(images, missions, z_t) - target).pow(2).sum(-1).mean().backward()
        opt.step()
    thinker.eval()
    energy = (thinker.propose(images, missions) - target).pow(2).sum(-1).mean()
    blind = (thinker.propose(images, ["go to the object"] * 8) - target).pow(2).sum(-1).mean()
    copy = (z_t - target).pow(2).sum(-1).mean()
    assert energy < 0.2 * copy and energy < 0.2 * blind


@pytest.mark.parametrize("kind", ["idefics3", "qwen2_vl"])
def test_an_instruction_with_words_the_thinker_never_learned_is_refused_naming_them(kind: str, world_model) -> None:
    from thinkjepa.policy.subgoals import ThinkerSubgoals
    from thinkjepa.protocols import EpisodeStart

    thinker = tiny_thinker(kind, world_model)
    assert thinker.unknown_words("go to the red ball") == []
    assert thinker.unknown_words("go to the red chair near the sofa") == ["chair", "near", "sofa"]
    source = ThinkerSubgoals(thinker)
    source.reset([EpisodeStart("go to a purple key")])
    with pytest.raises(ValueError, match=r"does not know the words \['chair'\] of 'go to the chair'"):
        source.reset([EpisodeStart("go to a purple key"), EpisodeStart("go to the chair")])

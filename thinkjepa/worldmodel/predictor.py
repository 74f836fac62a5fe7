"""Action encoders and the action-conditioned latent predictor ``ẑ_{t+1} = g(z_{t-h+1..t}, a_t)``.

The predictor is a residual MLP over a short history of latents: BabyAI is fully observed from the
top-down frame, so a short history suffices, and an MLP keeps a planner's B·N·H predictor calls
cheap. It predicts the change ``ẑ_{t+1} - z_t``, which starts near identity and trains faster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn


class DiscreteActionEncoder(nn.Module):
    """Embeds discrete actions; accepts indices ``(...)`` or probability vectors ``(..., K)``.

    Probability vectors are what the gradient planner's relaxation feeds in: their embedding is the
    probability-weighted mix of the action embeddings, which equals the index embedding on one-hots.
    """

    def __init__(self, num_actions: int, dim: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.embedding = nn.Embedding(num_actions, dim)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if actions.dtype in (torch.int64, torch.int32):
            if actions.numel() and (actions.min() < 0 or actions.max() >= self.num_actions):
                raise ValueError(
                    f"action ids must lie in [0, {self.num_actions}), got range "
                    f"[{int(actions.min())}, {int(actions.max())}]"
                )
            return self.embedding(actions)
        if actions.shape[-1] != self.num_actions:
            raise ValueError(
                f"this world model takes discrete actions (ids in [0, {self.num_actions}) or soft actions with last dim "
                f"{self.num_actions}); got float actions {tuple(actions.shape)}: continuous actions need a world model "
                "with predictor.action_space='continuous'"
            )
        return actions.to(self.embedding.weight.dtype) @ self.embedding.weight


class ContinuousActionEncoder(nn.Module):
    """Embeds continuous actions ``(..., A)`` with a two-layer MLP."""

    def __init__(self, action_dim: int, dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.net = nn.Sequential(nn.Linear(action_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if not actions.is_floating_point():
            raise ValueError(
                f"this world model takes continuous actions (..., {self.action_dim}); got integer action ids "
                f"{tuple(actions.shape)}: discrete actions need a world model with predictor.action_space='discrete'"
            )
        if actions.shape[-1] != self.action_dim:
            raise ValueError(f"this world model takes continuous actions (..., {self.action_dim}), got "
                             f"{tuple(actions.shape)}")
        return self.net(actions.to(self.net[0].weight.dtype))


@dataclass(frozen=True)
class PredictorConfig:
    """Architecture of the action-conditioned predictor.

    Attributes:
        action_space: ``discrete`` (an embedding per action id) or ``continuous`` (an MLP).
        num_actions: Number of discrete actions (BabyAI: 7), or the continuous action dimension.
        action_embed_dim: Width of the action embedding.
        history: How many past latents the predictor sees (1 = Markov).
        hidden_dim: Width of the residual MLP.
        depth: Number of residual blocks.
        guidance_dim: Width of a guidance vector ``c`` (e.g. pooled VLM hidden states) injected into every block
            by FiLM behind a tanh gate that starts at 0, so a guided predictor starts as the unguided one
            (0 = no guidance).
    """

    action_space: str = "discrete"
    num_actions: int = 7
    action_embed_dim: int = 32
    history: int = 1
    hidden_dim: int = 512
    depth: int = 3
    guidance_dim: int = 0


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class GatedFiLM(nn.Module):
    """``h + tanh(gate) * (gamma(c) * h + beta(c))``: FiLM of hidden features ``h (B, W)`` by a layer-normalised
    guidance vector ``c (B, C)`` (a VLM's hidden states come at their own scale), behind a gate that starts at 0 —
    exactly the identity until the gate opens. The FiLM maps start random (small), so that the gate has a gradient
    from the first step (a zero map behind a zero gate would never move)."""

    def __init__(self, guidance_dim: int, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(guidance_dim)
        self.film = nn.Linear(guidance_dim, 2 * width)
        nn.init.normal_(self.film.weight, std=0.02)
        nn.init.zeros_(self.film.bias)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(self.norm(c.to(h.dtype))).chunk(2, dim=-1)
        return h + torch.tanh(self.gate) * (gamma * h + beta)


class MLPPredictor(nn.Module):
    """``g(z_hist (B, h, D), a (B[, K])) -> ẑ_next (B, D)``."""

    def __init__(self, config: PredictorConfig, latent_dim: int) -> None:
        super().__init__()
        if config.history < 1:
            raise ValueError(f"predictor.history must be >= 1, got {config.history}")
        if config.action_space == "discrete":
            self.action_encoder: nn.Module = DiscreteActionEncoder(config.num_actions, config.action_embed_dim)
        elif config.action_space == "continuous":
            self.action_encoder = ContinuousActionEncoder(config.num_actions, config.action_embed_dim)
        else:
            raise ValueError(f"predictor.action_space must be 'discrete' or 'continuous', got {config.action_space!r}")
        self.config = config
        self.latent_dim = latent_dim
        self.inp = nn.Linear(config.history * latent_dim + config.action_embed_dim, config.hidden_dim)
        self.blocks = nn.Sequential(*[_Block(config.hidden_dim) for _ in range(config.depth)])
        self.guidance = (nn.ModuleList(GatedFiLM(config.guidance_dim, config.hidden_dim) for _ in range(config.depth))
                         if config.guidance_dim > 0 else None)
        self.out = nn.Sequential(nn.LayerNorm(config.hidden_dim), nn.Linear(config.hidden_dim, latent_dim))
        nn.init.zeros_(self.out[1].weight)  # start as the identity map: ẑ_{t+1} = z_t
        nn.init.zeros_(self.out[1].bias)

    @property
    def history(self) -> int:
        return self.config.history

    def forward(self, z_hist: torch.Tensor, actions: torch.Tensor | None, guidance: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The next latent from the history, the action (``None``: forecast without it, a zero action embedding)
        and, for a guided predictor, the guidance vector ``(B, guidance_dim)`` (``None``: unguided)."""
        b = z_hist.shape[0]
        action = (z_hist.new_zeros(b, self.config.action_embed_dim) if actions is None
                  else self.action_encoder(actions))
        h = self.inp(torch.cat([z_hist.reshape(b, -1), action], dim=-1))
        if guidance is None:
            h = self.blocks(h)
        else:
            if self.guidance is None:
                raise ValueError("this predictor takes no guidance (predictor.guidance_dim is 0)")
            if guidance.shape != (b, self.config.guidance_dim):
                raise ValueError(f"guidance must be (B, {self.config.guidance_dim}) = ({b}, {self.config.guidance_dim}), "
                                 f"got {tuple(guidance.shape)}")
            for block, film in zip(self.blocks, self.guidance, strict=True):
                h = film(block(h), guidance)
        return z_hist[:, -1] + self.out(h)  # (B, D)


def with_guidance(predictor: MLPPredictor, guidance_dim: int) -> MLPPredictor:
    """A guided copy of ``predictor``: its weights, plus gated FiLM for ``(B, guidance_dim)`` vectors in every
    block, gates closed, so it gives ``predictor``'s output exactly until trained."""
    guided = MLPPredictor(replace(predictor.config, guidance_dim=guidance_dim), predictor.latent_dim)
    missing, unexpected = guided.load_state_dict(predictor.state_dict(), strict=False)
    if unexpected or any(not k.startswith("guidance.") for k in missing):
        raise ValueError(f"the guided predictor does not extend this one: {unexpected=} {missing=}")
    return guided

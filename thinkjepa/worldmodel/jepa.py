"""The action-conditioned JEPA world model as a plain ``nn.Module``.

    z_t     = f_θ(o_t)             context encoder (trained)
    z̄_t     = f̄(o_t)               target encoder: EMA of f_θ, never receives gradients
    ẑ_{t+1} = g_φ(z_{t-h+1..t}, a_t)

    L = ‖g(z_t, a_t) − sg z̄_{t+1}‖²                     teacher-forced, every step of the window
      + w_roll · mean_k ‖ĝ^k(z_0, a_{0:k}) − sg z̄_k‖²   open-loop rollout, fed its own predictions
      + λ · R(Z)                                        anti-collapse on the context latents
      + w_idm · CE(q(z_t, z_{t+1}), a_t)                inverse dynamics (optional, on by default)

The rollout term matters because planners roll the predictor out open-loop for H steps; training
only on one-step targets lets errors compound unchecked.

The inverse-dynamics term (as in PLDM, Sobal et al. 2025) asks a small head to recover the action
from two consecutive context latents. Without it, our first BabyAI model met the JEPA loss by
encoding the *layout* (which differs between episodes and satisfies the variance term) while
barely encoding the agent's pose: its predictor ignored the action (every action sequence landed
within 0.1 % of the same distance to the goal) and planning failed on every episode. The term
makes the controllable part of the state — the part a planner moves — part of the latent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thinkjepa.worldmodel.encoder import EncoderConfig, ViTEncoder
from thinkjepa.worldmodel.predictor import MLPPredictor, PredictorConfig
from thinkjepa.worldmodel.regularizers import Regularizer


@dataclass(frozen=True)
class ObjectiveConfig:
    """Weights of the world-model loss.

    Attributes:
        rollout_steps: k, the open-loop steps of the rollout term (capped by the window length).
        rollout_weight: Weight of the rollout term.
        reg_weight: λ, weight of the anti-collapse regularizer.
        idm_weight: Weight of the inverse-dynamics term: cross-entropy over discrete action ids, mean squared
            error of continuous actions (0 = off).
    """

    rollout_steps: int = 4
    rollout_weight: float = 1.0
    reg_weight: float = 1.0
    idm_weight: float = 1.0


class JEPA(nn.Module):
    """Context encoder, EMA target encoder and predictor; implements the WorldModel protocol."""

    def __init__(
        self,
        encoder: EncoderConfig,
        predictor: PredictorConfig,
        regularizer: Regularizer | None = None,
    ) -> None:
        super().__init__()
        self.encoder = ViTEncoder(encoder)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = MLPPredictor(predictor, encoder.latent_dim)
        self.regularizer = regularizer
        d, k = encoder.latent_dim, predictor.num_actions
        # Training-only head (not exported): which action led from z_t to z_{t+1}? Logits over the K discrete
        # actions, or the A-dim continuous action itself.
        self.inverse_dynamics = nn.Sequential(nn.Linear(2 * d, 256), nn.GELU(), nn.Linear(256, k))
        # Optional planning cost, fit after the predictor (thinkjepa.train.distance); exported.
        self.distance: nn.Module | None = None

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @property
    def continuous(self) -> bool:
        """Whether the predictor takes continuous action vectors (else discrete action ids)."""
        return self.predictor.config.action_space == "continuous"

    @property
    def image_size(self) -> int:
        return self.encoder.config.image_size

    @property
    def num_actions(self) -> int:
        return self.predictor.config.num_actions

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Context latents ``(B, D)`` of ``uint8 (B, H, W, 3)`` images."""
        return self.encoder(images)

    @torch.no_grad()
    def target_encode(self, images: torch.Tensor) -> torch.Tensor:
        """Target (EMA) latents ``(B, D)``; never carries gradients."""
        return self.target_encoder(images)

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor, share_prefixes: bool | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        """Open-loop predictions ``(B, T, D)`` for steps 1..T from ``z0 (B, D)`` or ``(B, h, D)``.

        Args:
            z0: Start latents (or latent histories).
            actions: ``long (B, T)`` ids, ``float (B, T, K)`` probabilities or ``float (B, T, A)``.
            share_prefixes: For discrete ids without autograd, evaluate the predictor once per
                *distinct* (start, action prefix) and share the result. A planner's candidates
                start from a few repeated latents and their prefixes repeat: with 4 actions, step 1
                has at most 4 distinct inputs per episode, step 2 at most 16, and a converged CEM
                distribution far fewer. The result equals the plain rollout up to float rounding.
                ``None`` (default) shares on CPU only: on a GPU the ``torch.unique`` calls
                synchronise with the host and cost more than the predictor calls they save
                (H200, batched CEM B=16 N=300 30 iterations H=5: 0.090 s plain vs 0.217 s shared).
            guidance: ``(B, C)`` guidance vectors for a guided predictor (``predictor.guidance_dim``), held for
                the whole rollout (the thinker's slow rate); rollouts with guidance never share prefixes.
        """
        if actions.shape[0] != z0.shape[0]:
            raise ValueError(f"rollout: z0 has batch {z0.shape[0]} but actions have {actions.shape[0]}")
        hist = self._start_history(z0)
        if share_prefixes is None:
            share_prefixes = z0.device.type == "cpu"
        if share_prefixes and guidance is None and actions.dtype == torch.long and not torch.is_grad_enabled():
            return self._rollout_shared(hist, actions)
        return self._unroll(hist, [actions[:, t] for t in range(actions.shape[1])], guidance)

    def forecast(self, z0: torch.Tensor, steps: int, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, steps, D)``: the latents the predictor expects next without being told the actions (a zero
        action embedding each step), from ``z0 (B, D)`` or ``(B, h, D)``, optionally guided."""
        if steps < 1:
            raise ValueError(f"forecast needs steps >= 1, got {steps}")
        return self._unroll(self._start_history(z0), [None] * steps, guidance)

    def _start_history(self, z0: torch.Tensor) -> torch.Tensor:
        """``(B, h, D)``: the predictor's history from ``z0 (B, D)`` or ``(B, h', D)``, a short one padded by
        repeating its oldest latent."""
        h = self.predictor.history
        hist = (z0.unsqueeze(1) if z0.ndim == 2 else z0)[:, -h:]
        if hist.shape[1] < h:
            hist = torch.cat([hist[:, :1].expand(-1, h - hist.shape[1], -1), hist], dim=1)
        return hist

    def _unroll(self, hist: torch.Tensor, steps: list[torch.Tensor | None], guidance: torch.Tensor | None
                ) -> torch.Tensor:
        """``(B, T, D)``: one predictor step per entry of ``steps`` (an action, or ``None`` for none), each fed
        its own prediction."""
        preds = []
        for step in steps:
            z_next = self.predictor(hist, step) if guidance is None else self.predictor(hist, step, guidance)
            preds.append(z_next)
            hist = torch.cat([hist[:, 1:], z_next.unsqueeze(1)], dim=1)
        return torch.stack(preds, dim=1)

    def _rollout_shared(self, hist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """:meth:`rollout` over distinct (start, prefix) nodes of the candidates' prefix tree."""
        b, h, d = hist.shape
        k = self.predictor.config.num_actions
        states, node = torch.unique(hist.reshape(b, h * d), dim=0, return_inverse=True)
        states = states.view(-1, h, d)  # (U, h, D) distinct start histories; node (B,) indexes them
        preds = []
        for t in range(actions.shape[1]):
            key, node = torch.unique(node * k + actions[:, t], return_inverse=True)  # (U,), (B,)
            parent_hist = states[key // k]  # (U, h, D)
            z_next = self.predictor(parent_hist, key % k)  # (U, D)
            preds.append(z_next[node])
            states = torch.cat([parent_hist[:, 1:], z_next.unsqueeze(1)], dim=1)
        return torch.stack(preds, dim=1)  # (B, T, D)

    def history_windows(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, h, D)``: for each t the h latents ending at t (left-padded)."""
        h = self.predictor.history
        padded = torch.cat([z[:, :1].expand(-1, h - 1, -1), z], dim=1)  # (B, T+h-1, D)
        return padded.unfold(1, h, 1).permute(0, 1, 3, 2)  # (B, T, h, D)

    def dynamics_loss(
        self, z: torch.Tensor, z_tgt: torch.Tensor, actions: torch.Tensor, objective: ObjectiveConfig,
        guidance: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictor's two terms: teacher-forced and open-loop rollout error.

        Args:
            z: ``(B, T, D)`` input latents (context latents; frozen target latents in stage 2).
            z_tgt: ``(B, T, D)`` target latents (no gradient).
            actions: ``(B, T-1)`` ids or ``(B, T-1, A)`` continuous actions.
            objective: ``rollout_steps`` caps the open-loop length.
            guidance: ``(B, C)`` for a guided predictor: one vector per window, held for every step (as a
                thinker's guidance is held between its queries).

        Returns:
            ``(teacher, rollout)`` mean squared errors.
        """
        b, t = z.shape[:2]
        hist = self.history_windows(z)[:, :-1]  # (B, T-1, h, D)
        step = () if guidance is None else (guidance.repeat_interleave(t - 1, dim=0),)
        pred = self.predictor(hist.flatten(0, 1), actions.flatten(0, 1), *step).view(b, t - 1, -1)
        teacher = F.mse_loss(pred, z_tgt[:, 1:])
        k = min(objective.rollout_steps, t - 1)
        roll = F.mse_loss(self.rollout(z[:, :1], actions[:, :k], guidance=guidance), z_tgt[:, 1 : k + 1])
        return teacher, roll

    def loss(
        self, frames: torch.Tensor, actions: torch.Tensor, objective: ObjectiveConfig
    ) -> dict[str, torch.Tensor]:
        """Training loss on a batch of windows.

        Args:
            frames: ``uint8 (B, T, H, W, 3)`` consecutive observations.
            actions: ``(B, T-1)`` action ids (or ``(B, T-1, A)`` continuous actions).
            objective: Loss weights.

        Returns:
            ``loss`` (to minimise) and its parts, plus the context latents ``z (B, T, D)``.
        """
        b, t = frames.shape[:2]
        if actions.shape[:2] != (b, t - 1):
            raise ValueError(f"frames {tuple(frames.shape)} need actions (B, T-1), got {tuple(actions.shape)}")
        flat = frames.flatten(0, 1)
        z = self.encode(flat).view(b, t, -1)  # (B, T, D)
        z_tgt = self.target_encode(flat).view(b, t, -1)  # (B, T, D)

        teacher, roll = self.dynamics_loss(z, z_tgt, actions, objective)
        reg = self.regularizer(z.flatten(0, 1)) if self.regularizer is not None else z.new_zeros(())
        total = teacher + objective.rollout_weight * roll + objective.reg_weight * reg
        out = {"teacher": teacher, "rollout": roll, "reg": reg, "z": z}
        if objective.idm_weight > 0 and (self.continuous or not actions.is_floating_point()):
            guess = self.inverse_dynamics(torch.cat([z[:, :-1], z[:, 1:]], dim=-1))  # (B, T-1, K) or (B, T-1, A)
            if self.continuous:  # regress the action that led from z_t to z_{t+1}
                out["idm"] = F.mse_loss(guess, actions.to(guess.dtype))
            else:
                out["idm"] = F.cross_entropy(guess.flatten(0, 1), actions.flatten())
                out["idm_acc"] = (guess.argmax(-1) == actions).float().mean()
            total = total + objective.idm_weight * out["idm"]
        out["loss"] = total
        return out

"""WorldModel: an action-conditioned JEPA that rolls latent states forward over many steps."""

from __future__ import annotations

import torch
from torch import nn

from jepa.models.conv import ConvEncoder
from jepa.models.jepa import JEPAAction
from jepa.models.predictor import Predictor

WORLD_TARGETS = ("ema", "shared", "online")
CONDITIONINGS = ("add", "concat")


class WorldModel(JEPAAction):
    """Latent dynamics model: state encoder, action encoder and a one-step predictor, rolled out in time.

    The latent of an observation is ``z = state_encoder(obs)`` (``(B, D)``, or ``(B, N, D)`` for a
    token encoder). One step predicts the next latent from the current one and the action embedding
    ``e = action_encoder(a)`` (``(B, E)``, broadcast over tokens)::

        z_next = z + predictor(x)      (residual=True, the default)
        z_next = predictor(x)          (residual=False)

    with ``x = z + e`` (``conditioning="add"``, as :class:`~jepa.models.JEPAAction`; ``E = D``) or
    ``x = [z, e]`` (``conditioning="concat"``: the predictor takes ``D + E`` features and can tell
    the state from the action, which the sum cannot always do in a small latent).

    :meth:`rollout` applies it autoregressively over a sequence of actions, batched over any number
    of candidates (what a planner needs); :meth:`forward_trajectory` gives the two training
    predictions of a window (V-JEPA 2-AC): teacher-forced one-step predictions from the encoded
    frames and an autoregressive rollout from the first frame, with their targets.

    Targets (``target_encoder``):

    * ``"ema"``: a frozen EMA copy of the state encoder (I-JEPA / V-JEPA 2-AC); call
      :meth:`~jepa.models.JEPAAction.update_target_encoder` after every optimizer step (the machinery of
      :class:`~jepa.models.JEPA`).
    * ``"shared"``: the state encoder itself under stop-gradient.
    * ``"online"``: the state encoder itself *with* gradient, no EMA (LeWorldModel); pair it with an
      anti-collapse regularizer such as SIGReg on ``outputs["context"]``.

    Args:
        state_encoder: ``(B, *obs_shape) -> (B, [N,] D)``; an MLP for vectors (see :meth:`mlp`) or
            any image encoder module.
        action_encoder: ``(B, A) -> (B, D)``.
        predictor: ``(B, [N,] D) -> (B, [N,] D)``, applied per token.
        target_encoder: ``"ema"``, ``"shared"`` or ``"online"``.
        momentum, momentum_end: EMA schedule (``target_encoder="ema"`` only).
        residual: predict the change of the latent instead of the latent.
        conditioning: ``"add"`` or ``"concat"`` (see above).

    ``forward(state_t, action_t, state_t1)`` (from :class:`~jepa.models.JEPAAction`) still trains on
    single transitions, with the same one-step prediction as the rollout.
    """

    def __init__(
        self,
        state_encoder: nn.Module,
        action_encoder: nn.Module,
        predictor: nn.Module,
        target_encoder: str = "ema",
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        residual: bool = True,
        conditioning: str = "add",
    ) -> None:
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"WorldModel: conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if target_encoder not in WORLD_TARGETS:
            raise ValueError(f"WorldModel: target_encoder must be one of {WORLD_TARGETS}, got {target_encoder!r}")
        if not isinstance(action_encoder, nn.Module):
            raise TypeError(f"WorldModel: action_encoder must be an nn.Module, got {type(action_encoder).__name__}")
        jepa_mode = "ema" if target_encoder == "ema" else "shared"
        super().__init__(state_encoder, action_encoder, predictor, target_encoder=jepa_mode, momentum=momentum, momentum_end=momentum_end)
        self.target_mode = target_encoder
        self.residual = bool(residual)
        self.conditioning = conditioning

    @classmethod
    def mlp(
        cls,
        obs_dim: int,
        action_dim: int,
        latent_dim: int = 32,
        hidden_dim: int = 128,
        encoder_layers: int = 3,
        predictor_layers: int = 3,
        **kwargs,
    ) -> "WorldModel":
        """A world model for vector observations: MLP state encoder, action encoder and predictor
        (:class:`~jepa.models.Predictor` blocks: Linear, LayerNorm, GELU), the action concatenated to
        the latent (``conditioning="concat"``, action embedding of width ``latent_dim``).
        ``kwargs`` go to the constructor."""
        for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim), ("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"WorldModel.mlp: {name} must be a positive int, got {value!r}")
        return cls(
            Predictor(obs_dim, mlp_dim=hidden_dim, num_layers=encoder_layers, output_dim=latent_dim),
            Predictor(action_dim, mlp_dim=hidden_dim, num_layers=2, output_dim=latent_dim),
            Predictor(2 * latent_dim, mlp_dim=hidden_dim, num_layers=predictor_layers, output_dim=latent_dim),
            **{"conditioning": "concat", **kwargs},
        )

    @classmethod
    def conv(
        cls,
        image_shape: tuple[int, int, int],
        action_dim: int,
        latent_dim: int = 32,
        hidden_dim: int = 128,
        channels: tuple[int, ...] = (16, 32),
        predictor_layers: int = 3,
        **kwargs,
    ) -> "WorldModel":
        """A world model for image observations ``(C, H, W)``: a :class:`~jepa.models.ConvEncoder`
        state encoder (``channels`` stride-2 convolutions, then an MLP head to ``latent_dim``), and
        the action encoder and predictor of :meth:`mlp` (``conditioning="concat"``). ``kwargs`` go
        to the constructor."""
        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
            raise ValueError(f"WorldModel.conv: image_shape must be (C, H, W), got {image_shape!r}")
        for name, value in (("action_dim", action_dim), ("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"WorldModel.conv: {name} must be a positive int, got {value!r}")
        c, h, w = (int(v) for v in image_shape)
        return cls(
            ConvEncoder(c, (h, w), latent_dim=latent_dim, channels=tuple(channels), hidden_dim=hidden_dim),
            Predictor(action_dim, mlp_dim=hidden_dim, num_layers=2, output_dim=latent_dim),
            Predictor(2 * latent_dim, mlp_dim=hidden_dim, num_layers=predictor_layers, output_dim=latent_dim),
            **{"conditioning": "concat", **kwargs},
        )

    # ------------------------------------------------------------------ encoding
    def encode(self, obs: torch.Tensor, use_target: bool | None = None) -> torch.Tensor:
        """Latents ``(N, [tokens,] D)`` of observations ``(N, *obs_shape)``.

        ``use_target=None`` (planning) takes the EMA target encoder when there is one, the space
        the predictor was trained to predict into; ``False`` forces the online encoder.
        """
        if use_target is None:
            use_target = self.target_encoder is not None
        enc = self.target_encoder if (use_target and self.target_encoder is not None) else self.encoder
        return enc(obs)

    def _encode_frames(self, encoder: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """``(B, T, *obs_shape) -> (B, T, *latent_shape)`` through one encoder call."""
        b, t = obs.shape[:2]
        z = encoder(obs.reshape(b * t, *obs.shape[2:]))
        return z.reshape(b, t, *z.shape[1:])

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """``(B, H, A) -> (B, H, D)`` action embeddings (one action-encoder call)."""
        if actions.dim() != 3:
            raise ValueError(f"WorldModel: actions must have shape (B, H, A), got {tuple(actions.shape)}")
        b, h = actions.shape[:2]
        e = self.action_encoder(actions.reshape(b * h, actions.shape[-1]))
        return e.reshape(b, h, *e.shape[1:])

    # ------------------------------------------------------------------ dynamics
    def predict_next(self, z: torch.Tensor, action_embedding: torch.Tensor) -> torch.Tensor:
        """One step: latents ``(B, [N,] D)`` and action embeddings ``(B, E)`` -> next latents."""
        e = action_embedding
        while e.dim() < z.dim():
            e = e.unsqueeze(-2)  # one action per sample, broadcast over the tokens
        if self.conditioning == "concat":
            x = torch.cat([z, e.expand(*z.shape[:-1], e.shape[-1])], dim=-1)
        elif e.shape[-1] != z.shape[-1]:
            raise ValueError(f"WorldModel: action embedding size {e.shape[-1]} != latent size {z.shape[-1]} (conditioning='add')")
        else:
            x = z + e
        out = self.predictor(x)
        return z + out if self.residual else out

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Predicted latents after each action: ``z0`` ``(N, [tokens,] D)``, ``actions`` ``(N, H, A)``
        -> ``(N, H, [tokens,] D)``; each step feeds the previous prediction back in."""
        if actions.dim() != 3 or actions.shape[0] != z0.shape[0]:
            raise ValueError(
                f"WorldModel.rollout: actions must have shape (N={z0.shape[0]}, H, A), got {tuple(actions.shape)}"
            )
        return self._rollout_embedded(z0, self.embed_actions(actions))

    def _rollout_embedded(self, z0: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        out, z = [], z0
        for t in range(e.shape[1]):
            z = self.predict_next(z, e[:, t])
            out.append(z)
        return torch.stack(out, 1)

    # ------------------------------------------------------------------ training views
    def forward_trajectory(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training predictions for a window of ``H`` transitions.

        Args:
            obs: ``(B, H+1, *obs_shape)`` observations.
            actions: ``(B, H, A)`` the actions between them.

        Returns:
            ``"teacher_forcing"`` ``(B, H, ...)``: step ``t`` predicted from the encoded frame ``t``;
            ``"rollout"`` ``(B, H, ...)``: step ``t`` predicted autoregressively from frame 0 alone;
            ``"target"`` ``(B, H, ...)``: latents of frames ``1..H`` (EMA encoder, stop-gradient,
            or with gradient for ``target_encoder="online"``); ``"context"`` ``(B, H+1, ...)``: the
            online latents of every frame (for an anti-collapse regularizer).
        """
        if obs.dim() < 3 or actions.dim() != 3 or obs.shape[0] != actions.shape[0] or obs.shape[1] != actions.shape[1] + 1:
            raise ValueError(
                f"WorldModel.forward_trajectory: need obs (B, H+1, ...) and actions (B, H, A), got {tuple(obs.shape)} and {tuple(actions.shape)}"
            )
        h = actions.shape[1]
        context = self._encode_frames(self.encoder, obs)
        e = self.embed_actions(actions)
        b = context.shape[0]
        flat = context[:, :h].reshape(b * h, *context.shape[2:])
        teacher = self.predict_next(flat, e.reshape(b * h, *e.shape[2:])).reshape(b, h, *context.shape[2:])
        rollout = teacher if h == 1 else self._rollout_embedded(context[:, 0], e)
        if self.target_mode == "ema":
            with torch.no_grad():
                target = self._encode_frames(self.target_encoder, obs[:, 1:]).detach()
        elif self.target_mode == "shared":
            target = context[:, 1:].detach()
        else:
            target = context[:, 1:]
        return {"teacher_forcing": teacher, "rollout": rollout, "target": target, "context": context}

    def forward_batch(self, batch) -> dict[str, torch.Tensor]:
        """The model step of the trainer (:mod:`jepa.trainer.objective`): a batch of trajectory
        windows ``(obs (B, H+1, ...), actions (B, H, A))`` (what :class:`~jepa.data.TrajectoryDataset`
        yields) gives :meth:`forward_trajectory`'s outputs; a batch of transitions
        ``(state_t, action_t, state_t1)`` (``pairs=True``) gives :meth:`forward_features`'."""
        if isinstance(batch, dict):
            if "observations" not in batch or "actions" not in batch:
                raise ValueError(f"WorldModel.forward_batch: a dict batch needs 'observations' and 'actions', got keys {sorted(batch)}")
            return self.forward_trajectory(batch["observations"], batch["actions"])
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return self.forward_trajectory(batch[0], batch[1])
        if isinstance(batch, (tuple, list)) and len(batch) == 3:
            return self.forward_features(*batch)
        raise ValueError(
            "WorldModel.forward_batch: expected (observations, actions) windows or (state_t, action_t, state_t1) "
            f"transitions, got {type(batch).__name__}{f' of {len(batch)} items' if isinstance(batch, (tuple, list)) else ''}"
        )

    def forward_features(self, state_t: torch.Tensor, action_t: torch.Tensor, state_t1: torch.Tensor) -> dict[str, torch.Tensor]:
        """One transition (the pair view used by the v1 trainer): prediction, target and context."""
        context = self.encoder(state_t)
        prediction = self.predict_next(context, self.action_encoder(action_t))
        if self.target_mode == "online":
            target = self.encoder(state_t1)
        else:
            target = self.jepa.encode_target(state_t1)
        return {"prediction": prediction, "target": target, "context": context}

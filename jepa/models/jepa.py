"""JEPA: context encoder + predictor + target encoder (EMA or stop-gradient shared)."""

from __future__ import annotations

import copy
import inspect
import math

import torch
from torch import nn

from jepa import ops
from jepa.models._flat import flatten_pairs, has_sharded, local_tensors, still_flat
from jepa.models.base import BaseModel

TARGET_MODES = ("ema", "shared", "none")
POOL_MODES = ("mean", "flatten")


class JEPA(BaseModel):
    """Joint-Embedding Predictive Architecture.

    ``forward(state_t, state_t1)`` encodes ``state_t`` with the online encoder, predicts the
    embedding of ``state_t1`` with the predictor, and encodes ``state_t1`` with the target
    encoder (no gradient). Returns ``(prediction, target)``, both ``(B, T, D)`` for ``(B, T, ·)``
    inputs (or ``(B, D)`` for ``(B, ·)`` inputs).

    Args:
        encoder: online (context) encoder.
        predictor: maps context embeddings to predicted target embeddings (per token).
        target_encoder: ``"ema"`` (I-JEPA: a frozen copy of the encoder updated as an exponential
            moving average after every optimizer step), ``"shared"`` (the encoder itself under
            stop-gradient, as in the original docs' library) or ``"none"`` (LeJEPA-style: the encoder
            itself *with* gradients, no EMA, no stop-gradient; pair it with a regularizer that
            prevents collapse, e.g. ``JEPALoss(regularizer="sigreg", stop_gradient=False)``).
        momentum: EMA momentum at the start of training.
        momentum_end: EMA momentum at the end; the schedule is a cosine from ``momentum`` to
            ``momentum_end`` over the number of optimizer steps set by
            :meth:`set_total_steps` (the trainer calls it).
        projector: optional head on the mean-pooled context embedding (``forward_features``'s
            ``projection``), what an anti-collapse regularizer acts on.
        pool: how :meth:`embed` turns ``(B, T, D)`` token embeddings into one row per sample:
            ``"mean"`` over tokens (``(B, D)``) or ``"flatten"`` (``(B, T*D)``: the whole token grid,
            which keeps where things are; the digits default, whose 16 tokens are a 4x4 grid).
    """

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        target_encoder: str = "ema",
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        projector: nn.Module | None = None,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"JEPA: encoder must be an nn.Module, got {type(encoder).__name__}")
        if not isinstance(predictor, nn.Module):
            raise TypeError(f"JEPA: predictor must be an nn.Module, got {type(predictor).__name__}")
        if target_encoder not in TARGET_MODES:
            raise ValueError(f"JEPA: target_encoder must be one of {TARGET_MODES}, got {target_encoder!r}")
        for name, value in (("momentum", momentum), ("momentum_end", momentum_end)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"JEPA: {name} must be in [0, 1], got {value!r}")
        if pool not in POOL_MODES:
            raise ValueError(f"JEPA: pool must be one of {POOL_MODES}, got {pool!r}")
        if projector is not None and not isinstance(projector, nn.Module):
            raise TypeError(f"JEPA: projector must be an nn.Module or None, got {type(projector).__name__}")
        self.encoder = encoder
        self.predictor = predictor
        self.projector = projector
        self.pool = pool
        self.target_mode = target_encoder
        self.momentum_start = float(momentum)
        self.momentum_end = float(momentum_end)
        if target_encoder == "ema":
            self.target_encoder = copy.deepcopy(encoder)
            self.target_encoder.requires_grad_(False)
        else:
            self.target_encoder = None
        # Saved with the weights so a resumed run continues the same momentum schedule.
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_total_steps", torch.zeros((), dtype=torch.long))
        self._encoder_takes_mask = _accepts(encoder, "mask")
        self._predictor_takes_mask = _accepts(predictor, "mask")
        self._ema_layout = None
        self._ema_calls = 0
        # Host copies of the two schedule buffers, so the momentum is computed without reading a
        # CUDA buffer (a host sync) every step; re-read after load_state_dict / .to().
        self._host_schedule: list[int] | None = None
        # load_state_dict(assign=True) swaps parameter objects: rebuild the flat EMA layout after it.
        self.register_load_state_dict_post_hook(_reset_ema_layout_hook)

    # ------------------------------------------------------------------ forward
    def encode_target(self, state: torch.Tensor) -> torch.Tensor:
        """Target embeddings of ``state``: no gradient, except with ``target_encoder="none"`` (the
        online encoder, gradients flowing)."""
        if self.target_mode == "none":
            return self.encoder(state)
        with torch.no_grad():
            enc = self.target_encoder if self.target_encoder is not None else self.encoder
            return enc(state).detach()

    def forward_features(
        self, state_t: torch.Tensor, state_t1: torch.Tensor, *, context_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Like :meth:`forward` but also returns the context embeddings (for regularizers).

        ``context_mask`` (``(B, T)`` bool, True = hidden from the context encoder) is passed to
        encoders/predictors that accept a ``mask`` argument.
        """
        if tuple(state_t.shape) != tuple(state_t1.shape) and state_t.shape[0] != state_t1.shape[0]:
            raise ValueError(
                f"JEPA: state_t and state_t1 must have the same batch size, got {tuple(state_t.shape)} and {tuple(state_t1.shape)}"
            )
        if context_mask is not None and self._encoder_takes_mask:
            context = self.encoder(state_t, mask=context_mask)
        else:
            context = self.encoder(state_t)
        if context_mask is not None and self._predictor_takes_mask:
            prediction = self.predictor(context, mask=context_mask)
        else:
            prediction = self.predictor(context)
        target = self.encode_target(state_t1)
        out = {"prediction": prediction, "target": target, "context": context}
        if self.projector is not None:
            out["projection"] = self.projector(context.mean(dim=1) if context.dim() == 3 else context)
        return out

    def forward(self, state_t: torch.Tensor, state_t1: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_features(state_t, state_t1, **kwargs)
        return out["prediction"], out["target"]

    @torch.no_grad()
    def embed(self, x: torch.Tensor, pooled: bool = True, use_target: bool = False) -> torch.Tensor:
        """Embeddings for downstream use: one row per sample when ``pooled`` (``(B, T, D)`` tokens
        averaged, or flattened with ``pool="flatten"``), else the encoder's output as is."""
        enc = self.target_encoder if (use_target and self.target_encoder is not None) else self.encoder
        z = enc(x)
        if not pooled or z.dim() != 3:
            return z
        return z.flatten(1) if self.pool == "flatten" else z.mean(dim=1)

    # ------------------------------------------------------------------ EMA target
    def set_total_steps(self, total_steps: int) -> None:
        """Length of the momentum schedule in optimizer steps."""
        if int(total_steps) < 0:
            raise ValueError(f"JEPA.set_total_steps: total_steps must be >= 0, got {total_steps}")
        self.ema_total_steps.fill_(int(total_steps))
        if self._host_schedule is not None:
            self._host_schedule[1] = int(total_steps)

    def _schedule(self) -> list[int]:
        """[ema_step, ema_total_steps] as Python ints. On the CPU the buffers are read (free); on a
        GPU a host copy kept in step with them is used, so no update waits for the device (after
        writing those buffers yourself on a GPU, call :meth:`reset_ema_layout`)."""
        if self._host_schedule is None or self.ema_step.device.type == "cpu":
            self._host_schedule = [int(self.ema_step), int(self.ema_total_steps)]
        return self._host_schedule

    def current_momentum(self) -> float:
        """Momentum used by the next :meth:`update_target_encoder` call (cosine schedule)."""
        step, total = self._schedule()
        if total <= 0:
            return self.momentum_start
        progress = min(step, total) / total
        return self.momentum_end - (self.momentum_end - self.momentum_start) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def update_target_encoder(self, momentum: float | None = None) -> float:
        """EMA step of the target encoder toward the online encoder; returns the momentum used.

        Call once per optimizer step (the trainer does, also under gradient accumulation).
        No-op (returns 0.0) with ``target_encoder="shared"`` or ``"none"``.

        On the first call the parameters of the encoder and of its EMA copy are laid out as views
        of one flat buffer per device and dtype, so every later update is a single
        :func:`jepa.ops.ema_update` call over a few flat tensors, however many parameters the
        encoder has. ``model.to(...)``/``.half()`` and ``load_state_dict`` rebuild the layout; if you
        assign ``param.data`` of the encoder yourself, call :meth:`reset_ema_layout` afterwards (a
        check every ``EMA_LAYOUT_CHECK_EVERY`` updates raises if the layout was broken).

        Sharded parameters (``DTensor`` objects, e.g. under ``strategy="fsdp"``, where the target encoder
        is sharded like the encoder): the update runs on each rank's local shards, one
        :func:`jepa.ops.ema_update` call over them, with no communication and no full copy.
        """
        if self.target_encoder is None:
            return 0.0
        m = self.current_momentum() if momentum is None else float(momentum)
        layout = self._ema_layout
        if layout is None:
            layout = self._ema_layout = self._build_ema_layout()
        elif self._ema_calls % self.EMA_LAYOUT_CHECK_EVERY == 0:
            self._check_ema_layout(layout)
        self._ema_calls += 1
        flat_t, flat_o, params_t, params_o, buffers = layout
        if flat_t is not None:
            ops.ema_update(flat_t, flat_o, m)
        else:  # (sharded parameters: their local shards, fetched each time as FSDP may re-home them)
            ops.ema_update(local_tensors(params_t), local_tensors(params_o), m)
        for bt, bo in buffers:
            bt.copy_(bo)
        self.ema_step += 1
        self._schedule()[0] += 1
        return m

    EMA_LAYOUT_CHECK_EVERY = 64

    def reset_ema_layout(self) -> None:
        """Forget the flat EMA layout; the next update rebuilds it from the current parameters."""
        self._ema_layout = None
        self._ema_calls = 0
        self._host_schedule = None

    def _build_ema_layout(self):
        params_t = list(self.target_encoder.parameters())
        params_o = list(self.encoder.parameters())
        if len(params_t) != len(params_o):
            raise RuntimeError(
                f"JEPA: the target encoder has {len(params_t)} parameters but the encoder has {len(params_o)}; "
                "they must have the same structure"
            )
        # sharded parameters stay where FSDP keeps them (views of its shard storage): never flattened
        flats = None if has_sharded(params_t) or has_sharded(params_o) else flatten_pairs(params_t, params_o)
        buffers = list(zip(self.target_encoder.buffers(), self.encoder.buffers()))
        if flats is None:
            return None, None, params_t, params_o, buffers
        return flats[0], flats[1], params_t, params_o, buffers

    def _check_ema_layout(self, layout) -> None:
        flat_t, flat_o, params_t, params_o, _ = layout
        current = list(self.encoder.parameters())
        same_objects = len(current) == len(params_o) and all(a is b for a, b in zip(current, params_o))
        if not same_objects or (flat_t is not None and not (still_flat(params_o, flat_o) and still_flat(params_t, flat_t))):
            raise RuntimeError(
                "JEPA: encoder parameters were replaced since the EMA layout was built (e.g. param.data = ... "
                "or load_state_dict(assign=True) on a sub-module), so recent EMA updates missed them; call "
                "model.reset_ema_layout() right after replacing parameters"
            )

    def _apply(self, fn, recurse: bool = True):
        # .to(), .cuda(), .half(), ... may move parameters to new storage: rebuild the flat layout.
        out = super()._apply(fn, recurse)
        self.reset_ema_layout()
        return out

    def online_modules(self) -> list[nn.Module]:
        """The modules trained by the optimizer (the target encoder is not one of them)."""
        return [m for m in (self.encoder, self.predictor, self.projector) if m is not None]


class JEPAAction(BaseModel):
    """Action-conditioned JEPA for ``(state_t, action_t, state_t1)`` batches.

    The predictor sees the state embedding plus the action embedding (broadcast over tokens when
    the action is one vector per sample) and predicts the target embedding of ``state_t1``.
    """

    def __init__(
        self,
        state_encoder: nn.Module,
        action_encoder: nn.Module,
        predictor: nn.Module,
        target_encoder: str = "ema",
        momentum: float = 0.996,
        momentum_end: float = 1.0,
    ) -> None:
        super().__init__()
        self.jepa = JEPA(state_encoder, predictor, target_encoder=target_encoder, momentum=momentum, momentum_end=momentum_end)
        self.action_encoder = action_encoder

    @property
    def encoder(self) -> nn.Module:
        return self.jepa.encoder

    @property
    def target_encoder(self) -> nn.Module | None:
        return self.jepa.target_encoder

    @property
    def predictor(self) -> nn.Module:
        return self.jepa.predictor

    def forward_features(self, state_t: torch.Tensor, action_t: torch.Tensor, state_t1: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prediction, target and context embeddings for one action-conditioned transition."""
        context = self.jepa.encoder(state_t)
        action = self.action_encoder(action_t)
        if action.dim() == context.dim() - 1:
            action = action.unsqueeze(1)
        if action.shape[-1] != context.shape[-1]:
            raise ValueError(
                f"JEPAAction: action embedding size {action.shape[-1]} != state embedding size {context.shape[-1]}"
            )
        prediction = self.jepa.predictor(context + action)
        target = self.jepa.encode_target(state_t1)
        return {"prediction": prediction, "target": target, "context": context}

    def forward(self, state_t: torch.Tensor, action_t: torch.Tensor, state_t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_features(state_t, action_t, state_t1)
        return out["prediction"], out["target"]

    def embed(self, x: torch.Tensor, pooled: bool = True, use_target: bool = False) -> torch.Tensor:
        return self.jepa.embed(x, pooled=pooled, use_target=use_target)

    def set_total_steps(self, total_steps: int) -> None:
        self.jepa.set_total_steps(total_steps)

    def current_momentum(self) -> float:
        return self.jepa.current_momentum()

    def update_target_encoder(self, momentum: float | None = None) -> float:
        return self.jepa.update_target_encoder(momentum)

    def online_modules(self) -> list[nn.Module]:
        return [self.jepa.encoder, self.jepa.predictor, self.action_encoder]


def _reset_ema_layout_hook(module: "JEPA", incompatible_keys) -> None:
    module.reset_ema_layout()


def _accepts(module: nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False

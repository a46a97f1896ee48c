"""Sharded training (``strategy="fsdp"``): FSDP2 (``torch.distributed.fsdp.fully_shard``) with a
sharded EMA target encoder and sharded, reshardable checkpoints.

:class:`ShardedDataParallel` is the sibling of :class:`~jepa.trainer.distributed.DataParallel` (same
methods, same loaders and collectives from :class:`~jepa.trainer.distributed.ParallelStrategy`), but
instead of wrapping the model step in DDP it shards the model in place (:func:`shard_model`):

* every transformer block (:class:`~jepa.models.layers.TransformerBlock`, or any child of a
  ``blocks`` ``ModuleList``) of the online encoder, the predictor, the projector **and the EMA target
  encoder** is one FSDP unit, then each of those modules is a unit at its root (its remaining
  parameters: patch embedding, position table, final norm, ...), then the whole model is the FSDP
  root. Parameters become ``DTensor``\\ s sharded on their first dimension: each rank holds about
  ``1 / world_size`` of every parameter, gradient, optimizer state and EMA weight;
* the target encoder is sharded exactly like the online encoder, so each rank's shard of a target
  weight pairs with its shard of the online weight and the EMA update
  (:meth:`~jepa.models.JEPA.update_target_encoder`, through :func:`jepa.ops.ema_update`) runs on
  the local shards: no all-gather, no full copy on any rank;
* ``mixed_precision="bf16"`` (``"fp16"``) becomes FSDP's ``MixedPrecisionPolicy``: parameters
  all-gathered and computed in bf16 (fp16), gradients reduce-scattered in fp32, the sharded master
  weights, optimizer state and EMA target kept in fp32 (fp16 adds a loss scaler whose inf/NaN check
  is agreed over the ranks, :class:`ShardedGradScaler`);
* gradients are reduce-scattered (averaged over ranks) after every backward, so accumulation adds
  sharded gradients and ``clip_grad_norm_`` computes the global norm over the sharded gradients;
* the optimizer you built over the unsharded parameters is pointed at the sharded ones (by
  parameter name; it must not hold state yet), so ``create_trainer(..., strategy="fsdp")`` and
  ``JEPATrainer(model, optimizer, strategy="fsdp")`` work unchanged.

The loss keeps DDP's global-batch semantics: the outputs the loss takes are gathered over ranks with
gradients (:func:`~jepa.trainer.distributed.gather_outputs`), every rank evaluates the loss of the
global batch, and the averaged reduce-scatter gives the gradient of that loss: 2 ranks with batch b
train like 1 process with batch 2b.

Needs torch >= 2.6 (:data:`FSDP_MIN_TORCH`, where ``fully_shard`` became public in
``torch.distributed.fsdp``); older versions get a ``RuntimeError`` that says so.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from jepa.amp import GradScaler
from jepa.ops.amp import unscale_ as _unscale_op
from jepa.trainer.activation_checkpointing import apply_activation_checkpointing, model_components, transformer_blocks
from jepa.trainer.distributed import DistributedContext, ParallelStrategy
from jepa.trainer.objective import model_outputs
from jepa.io.sharded import ShardedCheckpoint, is_shard_ref, leaf_part, leaf_shape, save_sharded, shard_layout

__all__ = ["FSDP_MIN_TORCH", "ShardedDataParallel", "ShardedGradScaler", "check_fsdp_support", "fsdp_units", "shard_model"]

#: Oldest torch with FSDP2 as ``torch.distributed.fsdp.fully_shard`` (and ``MixedPrecisionPolicy``,
#: ``register_fsdp_forward_method``).
FSDP_MIN_TORCH = (2, 6)

_MODEL_STEP_METHODS = ("forward_batch", "forward_features")


def _torch_version() -> tuple[int, int]:
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):  # pragma: no cover - unparseable local builds: let the import decide
        return FSDP_MIN_TORCH


def check_fsdp_support() -> None:
    """Raise ``RuntimeError`` when this torch cannot run ``strategy="fsdp"`` (FSDP2 needs torch >= 2.6
    with ``torch.distributed``)."""
    need = ".".join(map(str, FSDP_MIN_TORCH))
    if _torch_version() < FSDP_MIN_TORCH:
        raise RuntimeError(
            f"strategy='fsdp' needs torch >= {need} (FSDP2: torch.distributed.fsdp.fully_shard); this is torch "
            f"{torch.__version__}. Upgrade torch, or use strategy='ddp'"
        )
    if not dist.is_available():
        raise RuntimeError("strategy='fsdp': this torch build has no torch.distributed support")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401, PLC0415
    except ImportError as exc:  # pragma: no cover - a torch >= 2.6 build without FSDP2
        raise RuntimeError(f"strategy='fsdp' needs FSDP2 (torch.distributed.fsdp.fully_shard), missing from torch {torch.__version__}: {exc}") from exc


def _dtensor_type() -> Any:
    from torch.distributed.tensor import DTensor  # noqa: PLC0415

    return DTensor


# ----------------------------------------------------------------------------------- sharding plan
def fsdp_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules :func:`shard_model` makes FSDP units, by name, innermost first: the transformer
    blocks of each component (online modules and EMA target encoders,
    :func:`~jepa.trainer.activation_checkpointing.model_components`), each component, any other child
    of the root that holds parameters, and the root (named ``""``) last."""
    names = {id(m): n for n, m in model.named_modules()}
    units: list[nn.Module] = []
    for comp in model_components(model):
        units.extend(transformer_blocks(comp))
        units.append(comp)
    # children of the root still holding parameters outside every unit get a unit of their own, so
    # the root keeps only its own direct parameters (if any)
    covered = {id(p) for u in units for p in u.parameters()}
    for child in model.children():
        if any(id(p) not in covered for p in child.parameters()) and all(child is not u for u in units):
            units.append(child)
    units.append(model)
    return [(names.get(id(u), "?"), u) for u in units]


def _mp_policies(mixed_precision: str | None) -> tuple[Any, Any]:
    from torch.distributed.fsdp import MixedPrecisionPolicy  # noqa: PLC0415

    if mixed_precision is None:
        return MixedPrecisionPolicy(), MixedPrecisionPolicy()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    unit = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    # the root does not cast the batch: each unit casts its own inputs (indices, masks, targets stay as they are)
    root = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    return unit, root


def _placement_fn(world_size: int) -> Any:
    """FSDP's placement per parameter: its first dimension (FSDP's default), unless that dimension is
    smaller than the world size (a ``(1, T, D)`` position table, a ``(1, 1, D)`` mask token), which
    would leave some ranks with nothing and one with all of it; then the first dimension that
    divides evenly (FSDP needs even splits off dim 0)."""
    from torch.distributed.tensor import Shard  # noqa: PLC0415

    def place(param: nn.Parameter) -> Any:
        shape = tuple(param.shape)
        if not shape or shape[0] >= world_size:
            return None
        for d in range(1, len(shape)):
            if shape[d] >= world_size and shape[d] % world_size == 0:
                return Shard(d)
        return None

    return place


def shard_model(model: nn.Module, mesh: Any, *, mixed_precision: str | None = None) -> list[str]:
    """Apply ``fully_shard`` to ``model`` in place, per block and per component, the root last (see
    the module docstring); returns the names of the units. The model's methods that the trainer
    calls for a step (``forward_batch`` or ``forward_features``) and ``embed`` run FSDP's forward hooks like ``forward``."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method  # noqa: PLC0415

    unit_policy, root_policy = _mp_policies(mixed_precision)
    extra = {}
    if "shard_placement_fn" in inspect.signature(fully_shard).parameters:
        extra["shard_placement_fn"] = _placement_fn(mesh.size())
    units = fsdp_units(model)
    for _, unit in units[:-1]:
        fully_shard(unit, mesh=mesh, mp_policy=unit_policy, **extra)
    fully_shard(model, mesh=mesh, mp_policy=root_policy, **extra)
    # The model step's method, and ``embed`` (probes, the collapse monitor), enter through the root's
    # hooks like ``forward``: the root's pre-forward orders the all-gathers after the last optimizer
    # step on GPUs. Only methods that do not call each other: a nested one would end the root's
    # forward early.
    step = next((name for name in _MODEL_STEP_METHODS if callable(getattr(model, name, None))), None)
    for name in (step, "embed"):
        if name is not None and callable(getattr(model, name, None)):
            register_fsdp_forward_method(model, name)
    # Settle which module is the root now, so its submodules (model.encoder, model.embed(...)) can be
    # called on their own before the first training step (FSDP otherwise takes the first module
    # that runs forward as the root).
    state = model._get_fsdp_state() if hasattr(model, "_get_fsdp_state") else None
    if state is not None and hasattr(state, "_lazy_init"):
        state._lazy_init()
    return [n for n, _ in units]


# ----------------------------------------------------------------------------------- gradient scaling
class ShardedGradScaler(GradScaler):
    """:class:`~jepa.amp.GradScaler` for sharded gradients: unscales each rank's local shards and
    takes the maximum of the inf/NaN flags over the ranks, so every rank skips (or takes) the same steps."""

    def _unscale_grads_(self, optimizer: torch.optim.Optimizer, inv_scale: torch.Tensor, found_inf: torch.Tensor,
                        allow_fp16: bool) -> dict[torch.device, torch.Tensor]:
        dtensor = _dtensor_type()
        grads: list[torch.Tensor] = []
        with torch.no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    grad = param.grad
                    if grad is None:
                        continue
                    local = grad.to_local() if isinstance(grad, dtensor) else grad
                    if not allow_fp16 and local.dtype == torch.float16:
                        raise ValueError("Attempting to unscale FP16 gradients: keep the sharded parameters in float32")
                    grads.append(local)
            device = grads[0].device if grads else found_inf.device
            found = found_inf.to(device)
            if grads:
                _unscale_op(grads, inv_scale.to(device), found)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(found, op=dist.ReduceOp.MAX)
        return {device: found}


# ----------------------------------------------------------------------------------- the strategy
class ShardedDataParallel(ParallelStrategy):
    """The FSDP side of one trainer (``strategy="fsdp"``): the model sharded in place by
    :func:`shard_model`, the optimizer pointed at the sharded parameters, sharded checkpoints.

    Args:
        model: the model (on the CPU or already on ``ctx.device``; FSDP moves it to the device one unit
            at a time, sharding each).
        ctx: the process group context.
        optimizer: the optimizer built over ``model``'s (unsharded) parameters; it must hold no state yet.
        mixed_precision: None, ``"bf16"`` or ``"fp16"`` (the trainer's setting; see the module docstring).
        activation_checkpointing: recompute each transformer block's activations in backward.
    """

    sharded = True

    def __init__(self, model: nn.Module, ctx: DistributedContext, optimizer: torch.optim.Optimizer, *,
                 mixed_precision: str | None = None, activation_checkpointing: bool = False) -> None:
        check_fsdp_support()
        from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415

        if any(len(s) for s in optimizer.state.values()):
            raise ValueError(
                "strategy='fsdp': the optimizer already holds state (it has stepped or loaded a state dict); build it fresh "
                "over the model's parameters and load checkpoints through the trainer (trainer.load_checkpoint / resume=...)"
            )
        names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in names:
                    raise ValueError(
                        f"strategy='fsdp': the optimizer holds a parameter of shape {tuple(p.shape)} that is not a parameter of "
                        "the model; build the optimizer over model.parameters() (or create_trainer builds it)"
                    )
        super().__init__(ctx)
        self.model = model
        self.optimizer = optimizer
        self.mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        self.activation_checkpointing = bool(activation_checkpointing)
        if self.activation_checkpointing:
            apply_activation_checkpointing(model)
        self.units = shard_model(model, self.mesh, mixed_precision=mixed_precision)
        sharded = dict(model.named_parameters(remove_duplicate=False))
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[id(p)]] for p in group["params"]]

    def forward(self, batch: Any) -> dict[str, Any]:
        """The model step (FSDP's hooks all-gather each unit's parameters around its forward)."""
        self._check_open()
        return model_outputs(self.model, batch)

    def no_sync(self, skip: bool) -> Any:
        """A no-op context: gradients are reduce-scattered after every micro-batch and accumulate
        sharded (an unsharded accumulation buffer would cost a full copy of the gradients per rank)."""
        return contextlib.nullcontext()

    def grad_scaler(self, device_type: str) -> ShardedGradScaler:
        """The loss scaler for ``mixed_precision="fp16"`` under FSDP."""
        return ShardedGradScaler(device_type)

    def adapt_trainer(self, trainer: Any) -> None:
        """What a trainer changes under FSDP: a loss scaler whose inf/NaN check of the sharded
        gradients is agreed over the ranks; sharded checkpoints are written synchronously."""
        if trainer.scaler is not None:
            trainer.scaler = self.grad_scaler(trainer.device.type)
        if trainer.async_checkpoint:
            log.warning("async_checkpoint: sharded checkpoints (strategy='fsdp') are written synchronously by every rank")

    # ------------------------------------------------------------------ checkpoints
    def save_state(self, state: Mapping[str, Any], path: str | Path) -> Path:
        """Write the trainer ``state`` (its DTensors are this rank's shards) as a sharded checkpoint at
        ``path`` (collective; see :mod:`jepa.io.sharded`)."""
        self._check_open()
        return save_sharded(state, path, rank=self.ctx.rank, world_size=self.ctx.world_size)

    def load_model_state(self, model: nn.Module, state: Mapping[str, Any], checkpoint: ShardedCheckpoint | None, source: str) -> None:
        """Copy the weights of ``state`` (a checkpoint's ``"model"`` entry, from a sharded checkpoint
        of any world size or an ordinary one) into the local shards of ``model``: each rank reads
        only the rows it holds. Keys and global shapes must match exactly (``ValueError`` otherwise)."""
        dtensor = _dtensor_type()
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(
                f"{source}: weights do not match the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
            )
        for key, tensor in own.items():
            shape = leaf_shape(state[key], checkpoint)
            if shape != tuple(tensor.shape):
                raise ValueError(f"{source}: shape mismatch for {key!r}: checkpoint has {shape}, model has {tuple(tensor.shape)}")
        with torch.no_grad():
            for key, tensor in own.items():
                leaf = state[key]
                if isinstance(tensor, dtensor):
                    dim, start, stop = shard_layout(tensor, key)
                    tensor.to_local().copy_(leaf_part(leaf, dim, start, stop, checkpoint))
                else:  # a buffer (replicated)
                    tensor.copy_(leaf_part(leaf, 0, 0, tensor.shape[0], checkpoint) if tensor.dim() else leaf)
        for m in model.modules():  # the EMA's host copy of its step counter was just overwritten
            if callable(getattr(m, "reset_ema_layout", None)):
                m.reset_ema_layout()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], checkpoint: ShardedCheckpoint | None) -> None:
        """Load an optimizer state dict whose per-parameter tensors may be sharded references or
        whole tensors: each becomes a DTensor laid out like its parameter, holding this rank's rows."""
        dtensor = _dtensor_type()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        per_param = state.get("state", {})
        converted: dict[Any, Any] = {}
        for idx, entries in per_param.items():
            i = int(idx)
            if not 0 <= i < len(params):
                raise ValueError(f"the checkpoint's optimizer state names parameter {i}, but the optimizer has {len(params)}")
            p = params[i]
            out = {}
            for k, v in entries.items():
                if (isinstance(v, torch.Tensor) or is_shard_ref(v)) and isinstance(p, dtensor) and leaf_shape(v, checkpoint) == tuple(p.shape) and p.dim() > 0:
                    dim, start, stop = shard_layout(p, f"optimizer state {i}.{k}")
                    local = leaf_part(v, dim, start, stop, checkpoint).to(device=p.to_local().device)
                    out[k] = dtensor.from_local(local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())
                elif is_shard_ref(v):
                    raise ValueError(f"optimizer state {i}.{k}: a sharded tensor of shape {leaf_shape(v, checkpoint)} for a parameter of shape {tuple(p.shape)}")
                else:
                    out[k] = v
            converted[idx] = out
        optimizer.load_state_dict({**state, "state": converted})

    def _release(self) -> None:
        self.model = None  # type: ignore[assignment]
        self.optimizer = None  # type: ignore[assignment]

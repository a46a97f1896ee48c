"""Optimizer construction: `create_optimizer` by name, fused AdamW where supported, and Lion."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from jepa.trainer.checks import check_number


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights (matrices) and undecayed biases, norms and 1-d parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "mask_token" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def fused_supported(device: torch.device | str) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` runs on ``device`` with this torch."""
    device = torch.device(device)
    try:
        p = nn.Parameter(torch.zeros(1, device=device))
        p.grad = torch.zeros(1, device=device)
        torch.optim.AdamW([p], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def build_adamw(
    params: Iterable | nn.Module,
    learning_rate: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    device: torch.device | str = "cpu",
) -> torch.optim.AdamW:
    """AdamW, fused where the device supports it (about 4x faster per step than the default on CPU)."""
    check_number("learning_rate", learning_rate, low=0, low_open=True, noun="")
    check_number("weight_decay", weight_decay, low=0, noun="")
    groups = param_groups(params, weight_decay) if isinstance(params, nn.Module) else params
    kwargs = {"fused": True} if fused_supported(device) else {}
    return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay, betas=betas, eps=eps, **kwargs)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    Per parameter ``p`` with gradient ``g`` and momentum ``m`` (zero at start)::

        update = sign(beta1 * m + (1 - beta1) * g)
        p      = p - lr * (update + weight_decay * p)     # decoupled weight decay
        m      = beta2 * m + (1 - beta2) * g

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (> 0); typically 3-10x smaller than AdamW's.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``; the paper uses ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay (>= 0).
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0) -> None:
        _check_hyper("Lion", learning_rate=lr, weight_decay=weight_decay, betas=betas)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        """One Lion update of every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("Lion does not support sparse gradients")
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["exp_avg"]
                update = m.mul(beta1).add_(grad, alpha=1 - beta1).sign_()
                if wd != 0:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(grad, alpha=1 - beta2)
        return loss


OPTIMIZER_TYPES = ("adamw", "adam", "sgd", "rmsprop", "lion")


def _check_hyper(owner: str, *, learning_rate=None, weight_decay=None, betas=None, eps=None, momentum=None) -> None:
    """Refuse out-of-range hyperparameters with a message naming the argument (None: not checked)."""
    bounds = {"learning_rate": {"low": 0, "low_open": True}, "weight_decay": {"low": 0}, "eps": {"low": 0},
              "momentum": {"low": 0.0, "high": 1.0, "high_open": True}}
    values = {"learning_rate": learning_rate, "weight_decay": weight_decay, "eps": eps, "momentum": momentum}
    for name, value in values.items():
        if value is not None:
            check_number(name, value, owner=owner, **bounds[name])
    if betas is not None:
        try:
            ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(check_number("betas", b, low=0.0, high=1.0, high_open=True) is b for b in betas)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{owner}: betas must be two numbers in [0, 1), got {betas!r}")


def _as_groups(params, weight_decay: float) -> list:
    """Parameter groups from a module (decay split by :func:`param_groups`), tensors or group dicts."""
    if isinstance(params, nn.Module):
        groups = [g for g in param_groups(params, weight_decay) if g["params"]]
        if not groups:
            raise ValueError(f"create_optimizer: params (a {type(params).__name__}) has no trainable parameters")
        return groups
    if isinstance(params, torch.Tensor):
        raise TypeError("create_optimizer: params must be a module or an iterable of tensors/group dicts, got a single tensor")
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"create_optimizer: params must be an nn.Module, an iterable of parameters or of group dicts, got {type(params).__name__}"
        ) from None
    if not items:
        raise ValueError("create_optimizer: params is empty; expected at least one parameter")
    if all(isinstance(x, dict) for x in items):
        for i, g in enumerate(items):
            if "params" not in g:
                raise ValueError(f"create_optimizer: params[{i}] is a group dict without a 'params' key")
        return items
    for i, x in enumerate(items):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"create_optimizer: params[{i}] must be a tensor (or every item a group dict), got {type(x).__name__}")
    return items


def _first_device(groups: list) -> torch.device | None:
    for g in groups:
        ps = g["params"] if isinstance(g, dict) else [g]
        if isinstance(ps, torch.Tensor):
            return ps.device
        for p in ps:
            return p.device
    return None


def create_optimizer(
    params: Iterable | nn.Module,
    optimizer_type: str = "adamw",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    device: torch.device | str | None = None,
) -> torch.optim.Optimizer:
    """Build an optimizer by name.

    Args:
        params: an ``nn.Module`` (its trainable parameters, with no weight decay on biases, norm
            weights, other 1-d parameters, positional embeddings and mask tokens), an iterable of
            parameters (one group, all decayed), or an iterable of parameter-group dicts (passed
            through; a group's own options override the arguments here).
        optimizer_type: ``"adamw"``, ``"adam"``, ``"sgd"``, ``"rmsprop"`` or ``"lion"``
            (case-insensitive).
        learning_rate: base learning rate (> 0).
        weight_decay: >= 0; decoupled for AdamW and Lion, L2 added to the gradient for Adam,
            SGD and RMSprop (torch semantics).
        betas: ``(beta1, beta2)`` in ``[0, 1)`` for AdamW, Adam and Lion.
        eps: denominator term (>= 0) for AdamW, Adam and RMSprop.
        momentum: in ``[0, 1)``; SGD momentum (no Nesterov) and RMSprop momentum.
        device: where the parameters live, to decide whether fused AdamW/Adam kernels are used
            (:func:`~jepa.trainer.optimizers.fused_supported`); default: the device of the first parameter.

    Returns:
        A ``torch.optim.Optimizer`` (``jepa.trainer.optimizers.Lion`` for ``"lion"``).
    """
    key = optimizer_type.lower() if isinstance(optimizer_type, str) else None
    if key not in OPTIMIZER_TYPES:
        raise ValueError(f"create_optimizer: unknown optimizer_type {optimizer_type!r}; expected one of {', '.join(OPTIMIZER_TYPES)}")
    _check_hyper("create_optimizer", learning_rate=learning_rate, weight_decay=weight_decay, betas=betas, eps=eps, momentum=momentum)
    betas = (float(betas[0]), float(betas[1]))
    groups = _as_groups(params, weight_decay)
    if key in ("adamw", "adam"):
        dev = device if device is not None else _first_device(groups)
        kwargs = {"fused": True} if dev is not None and fused_supported(dev) else {}
        cls = torch.optim.AdamW if key == "adamw" else torch.optim.Adam
        return cls(groups, lr=learning_rate, weight_decay=weight_decay, betas=betas, eps=eps, **kwargs)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    if key == "rmsprop":
        return torch.optim.RMSprop(groups, lr=learning_rate, eps=eps, weight_decay=weight_decay, momentum=momentum)
    return Lion(groups, lr=learning_rate, betas=betas, weight_decay=weight_decay)

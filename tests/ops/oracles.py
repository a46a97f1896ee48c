"""Float64 references and error measures shared by the jepa.ops tests (imported by the test modules
of this folder, which pytest puts on sys.path; not a test module itself)."""

from __future__ import annotations

import math

import torch


def attention_ref64(q, k, v, *, causal=False, key_padding_mask=None, scale=None):
    """Float64 attention from the formulas: explicit scores, masks, softmax; empty rows give 0."""
    q, k, v = q.double(), k.double(), v.double()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    n_q, n_k = s.shape[-2:]
    ok = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device)
    if causal:
        ok = ok.tril()
    ok = ok[None, None]
    if key_padding_mask is not None:
        ok = ok & ~key_padding_mask[:, None, None, :]
    ok = ok.expand_as(s)
    s = torch.where(ok, s, torch.zeros_like(s))
    m = torch.where(ok, s, torch.full_like(s, -torch.inf)).amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m) * ok
    denom = p.sum(-1, keepdim=True)
    return (p / torch.where(denom > 0, denom, torch.ones_like(denom))) @ v


def attention_rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref||, the denominator floored at an RMS of 0.05 per element. Where the exact result is
    0 (dq and dk with a single key: its softmax is constant) the rounding error is then judged against that
    scale instead of 0. With N(0, 1) inputs and N <= 129 the references' RMS is >= 0.15, above the floor."""
    assert not torch.isnan(x).any(), "NaN in the result (unwritten or poisoned element)"
    assert torch.isfinite(x).all()
    floor = 0.05 * math.sqrt(max(ref.numel(), 1))
    return ((x.double() - ref).norm() / max(ref.norm().item(), floor)).item()


def jepa_loss_hand64(pred, target, loss, normalize_target, beta, mask, reduction):
    """Float64 JEPA loss written from the formulas (no torch.nn.functional)."""
    p, t = pred.double(), target.double()
    if normalize_target:
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        t = (t - mu) / torch.sqrt(var + 1e-5)
    d = p - t
    if loss == "mse":
        e = d * d
    elif loss == "l1":
        e = d.abs()
    else:
        e = torch.where(d.abs() < beta, 0.5 * d * d / beta, d.abs() - 0.5 * beta)
    if mask is not None:
        e = e * mask.unsqueeze(-1).double()
    if reduction == "none":
        return e
    if reduction == "sum":
        return e.sum()
    n = e.numel() if mask is None else max(int(mask.sum()), 1) * pred.shape[-1]
    return e.sum() / n


def multi_rel_err(outs, refs) -> float:
    """||outs - refs|| / ||refs|| over a list of tensors taken as one vector (the absolute error when
    every reference is 0)."""
    num = math.sqrt(sum(float(((o.double() - r) ** 2).sum()) for o, r in zip(outs, refs)))
    den = math.sqrt(sum(float((r**2).sum()) for r in refs))
    return num / den if den > 0 else num


class PoisonedTorch:
    """Stands in for ``torch`` inside a kernel module: fresh buffers (empty, empty_like, zeros) come
    back full of NaN, so an element the kernel forgot to write shows up as NaN (which never passes)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        return torch.empty(*args, **kwargs).fill_(float("nan"))

    @staticmethod
    def empty_like(*args, **kwargs):
        return torch.empty_like(*args, **kwargs).fill_(float("nan"))

    @staticmethod
    def zeros(*args, **kwargs):
        return torch.empty(*args, **kwargs).fill_(float("nan"))

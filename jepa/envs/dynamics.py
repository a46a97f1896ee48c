"""The exact TwoRooms dynamics as a batched torch model (an oracle for planners and tests)."""

from __future__ import annotations

import torch
from torch import nn

from jepa.envs.two_rooms import TwoRooms


class TwoRoomsDynamics(nn.Module):
    """True dynamics of a :class:`~jepa.envs.TwoRooms` as a planning model whose latent is the position.

    ``encode(obs)`` returns the ``(N, 2)`` state observations unchanged and ``rollout(z0, actions)``
    applies the environment's swept-collision step to every candidate at once, so a planner given
    this model plans with perfect knowledge (the upper bound a learned world model is compared to).
    Positions computed in float64 match :meth:`jepa.envs.TwoRooms.move` to rounding.
    """

    def __init__(self, env: TwoRooms) -> None:
        super().__init__()
        if not isinstance(env, TwoRooms):
            raise TypeError(f"TwoRoomsDynamics: env must be a TwoRooms, got {type(env).__name__}")
        self.max_step = env.max_step
        walls = torch.as_tensor(env.walls, dtype=torch.float64)
        self.register_buffer("lo", walls[:, :2].clone())
        self.register_buffer("hi", walls[:, 2:].clone())

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """State observations ``(N, 2)`` are already the latent."""
        if obs.dim() != 2 or obs.shape[-1] != 2:
            raise ValueError(f"TwoRoomsDynamics.encode: expected state observations (N, 2), got {tuple(obs.shape)}")
        return obs

    def move(self, p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Batched :meth:`jepa.envs.TwoRooms.move`: ``p``, ``d`` ``(N, 2)`` -> end positions ``(N, 2)``.

        The same event loop (hit a face, slide, slide off its end) for every row at once; rows
        that finished early stay put while the others continue.
        """
        lo, hi = self.lo.to(p.dtype), self.hi.to(p.dtype)  # (K, 2)
        n = p.shape[0]
        rows = torch.arange(n, device=p.device)
        inf = torch.tensor(float("inf"), dtype=p.dtype, device=p.device)
        tau = torch.ones(n, dtype=p.dtype, device=p.device)
        contact_k = torch.zeros(n, dtype=torch.long, device=p.device)
        contact_ax = torch.zeros(n, dtype=torch.long, device=p.device)
        in_contact = torch.zeros(n, dtype=torch.bool, device=p.device)
        done = torch.zeros(n, dtype=torch.bool, device=p.device)
        v = d
        for _ in range(10):
            other = 1 - contact_ax
            eff = v.clone()
            eff[rows, contact_ax] = torch.where(in_contact, torch.zeros_like(tau), v[rows, contact_ax])
            eff_o = eff[rows, other]
            edge = torch.where(eff_o > 0, hi[contact_k, other], lo[contact_k, other])
            s_release = torch.where(in_contact & (eff_o != 0), (edge - p[rows, other]) / torch.where(eff_o != 0, eff_o, torch.ones_like(eff_o)), inf)
            done = done | (in_contact & (eff_o == 0))  # pressed against a face, no motion along it
            s_hit, k_hit, ax_hit, face = self._first_hit(p, eff, tau, lo, hi)
            active = ~done
            case_hit = active & torch.isfinite(s_hit) & (s_hit <= torch.minimum(s_release, tau))
            case_rel = active & ~case_hit & (s_release < tau)
            case_fin = active & ~case_hit & ~case_rel
            s = torch.where(case_hit, s_hit, torch.where(case_rel, s_release, torch.where(case_fin, tau, torch.zeros_like(tau))))
            p = p + s[:, None] * eff
            p[rows, ax_hit] = torch.where(case_hit, face, p[rows, ax_hit])
            p[rows, other] = torch.where(case_rel, edge, p[rows, other])
            tau = tau - s
            done = done | case_fin | (case_hit & in_contact)  # a second face across the first: a corner
            new_contact = case_hit & ~in_contact
            contact_k = torch.where(new_contact, k_hit, contact_k)
            contact_ax = torch.where(new_contact, ax_hit, contact_ax)
            in_contact = (in_contact & ~case_rel) | new_contact
            if bool(done.all()):
                break
        return p.clamp(0.0, 1.0)

    @staticmethod
    def _first_hit(p, v, tau, lo, hi):
        """Per row: earliest entry time into a block's interior within ``[0, tau]`` (inf if none),
        the block, the axis of the face and its coordinate; as ``TwoRooms._first_hit``."""
        pk, vk = p[:, None, :], v[:, None, :]  # (N, 1, 2) against (K, 2)
        moving = vk != 0
        safe = torch.where(moving, vk, torch.ones_like(vk))
        a, b = (lo - pk) / safe, (hi - pk) / safe
        s0, s1 = torch.minimum(a, b), torch.maximum(a, b)
        inside = (lo < pk) & (pk < hi)
        inf = torch.full_like(s0, float("inf"))
        # An axis without motion: always inside its slab (no constraint) or never (no hit).
        s0 = torch.where(moving, s0, torch.where(inside, -inf, inf))
        s1 = torch.where(moving, s1, torch.where(inside, inf, -inf))
        s_enter, axis = s0.max(-1)  # (N, K); ties go to axis 0, as in TwoRooms._first_hit
        s_exit = s1.min(-1).values
        hit = (s_enter < s_exit) & (s_enter >= 0) & (s_enter <= tau[:, None]) & (s_exit > 0)
        s_hit = torch.where(hit, s_enter, torch.full_like(s_enter, float("inf")))
        best, block = s_hit.min(-1)  # ties go to the first block
        rows = torch.arange(p.shape[0], device=p.device)
        ax = axis[rows, block]
        face = torch.where(v[rows, ax] > 0, lo[block, ax], hi[block, ax])
        return best, block, ax, face

    def step(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Positions after one action per row."""
        return self.move(z, self.max_step * action.to(z.dtype).clamp(-1.0, 1.0))

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(N, H, 2)`` positions after each of the ``H`` actions ``(N, H, 2)`` from ``z0`` ``(N, 2)``."""
        out, z = [], z0
        for t in range(actions.shape[1]):
            z = self.step(z, actions[:, t])
            out.append(z)
        return torch.stack(out, 1)

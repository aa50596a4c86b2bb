"""Non-causal linear attention as RALA / RAVLT use it.

One path, ``'reference'`` (alias ``'math'``): the op is two small matmuls already
(``k^T v`` and ``q (k^T v)``), there is nothing for a fused kernel to save; SDPA computes
softmax attention, not this.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._backends import Pattern
from ._checks import check_qkv, resolve_scale

__all__ = ['linear_attention']


def _reference(
    q: Tensor, k: Tensor, v: Tensor, *, q_norm: Tensor, k_norm: Tensor, eps: float,
    rank_augmentation: bool, scale: float | None,
) -> Tensor:
    n = k.shape[-2]
    if rank_augmentation:
        # RALA: weight each key by a_j = N * softmax over keys of (mean query . key) * scale;
        # ``weights`` holds a_j / N, in float32.
        q_mean = q_norm.mean(dim=-2, keepdim=True)  # (B, heads, 1, d)
        logits = (q_mean @ k_norm.transpose(-2, -1)) * scale  # (B, heads, 1, Nk)
        weights = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        weights = weights.transpose(-2, -1)  # (B, heads, Nk, 1)
    else:
        weights = torch.full((), 1.0 / n, dtype=torch.float32, device=k.device)
    # sum_j a_j k_j v_j / N with both factors scaled by N ** -0.5 before the N-key sum, as the
    # official code orders it: the unscaled sum overflows float16 at large N (16384 tokens
    # at 512x512), and so does a_j k_j alone for a peaked softmax.
    kv = (k * (weights * n ** 0.5)).to(k.dtype).transpose(-2, -1) @ (v * n ** -0.5)  # (B, heads, d, dv)
    k_norm_mean = (k_norm * weights).sum(dim=-2, keepdim=True).to(k_norm.dtype)  # (B, heads, 1, d)
    z = 1.0 / (q_norm @ k_norm_mean.transpose(-2, -1) + eps)  # (B, heads, Nq, 1)
    return (q @ kv) * z


PATTERN = Pattern('linear_attention', {'reference': _reference}, default='reference')


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_norm: Tensor | None = None,
    k_norm: Tensor | None = None,
    eps: float = 1e-6,
    rank_augmentation: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Non-causal linear attention as RALA / RAVLT use it.

    ``out = (q @ (k^T v / Nk)) * z`` with ``z = 1 / (q_norm . mean_N(k_norm) + eps)``.

    With ``rank_augmentation`` (RALA's rank-augmented linear attention), every key j is first
    weighted by ``a_j = Nk * softmax_j(scale * mean_i(q_norm_i) . k_norm_j)``: ``k_j`` and
    ``k_norm_j`` both become ``a_j k_j`` / ``a_j k_norm_j``. Because RoPE rotates each token
    by itself, weighting the rotated keys equals rotating the weighted keys, as RALA does.

    Args:
        q: Queries (feature-mapped, e.g. ELU + 1 and possibly RoPE-rotated), (B, heads, Nq, d).
        k: Keys, (B, heads, Nk, d).
        v: Values, (B, heads, Nk, dv).
        q_norm: Queries for the normaliser, shaped like q; defaults to q. RAVLT passes the
            queries before RoPE here.
        k_norm: Keys for the normaliser, shaped like k; defaults to k.
        eps: Added to the normaliser's denominator.
        rank_augmentation: Weight the keys as described above (RALA); False keeps plain
            linear attention.
        scale: Logit scale of the key weighting; None means ``head_dim ** -0.5``. Unused
            without ``rank_augmentation``.
        backend: ``'reference'``/``'math'`` (default and only backend: the op is two small
            matmuls already, there is nothing for a fused path to save).

    Returns:
        (B, heads, Nq, dv).
    """
    op = 'linear_attention'
    check_qkv(op, q, k, v, '(B, heads, N, d)', shared=2)
    for name, t, like in (('q_norm', q_norm, q), ('k_norm', k_norm, k)):
        if t is None:
            continue
        same = isinstance(t, Tensor) and (t.shape, t.dtype, t.device) == (like.shape, like.dtype, like.device)
        if not same:
            raise ValueError(
                f'{op}: {name} must be shaped like {name[0]} {tuple(like.shape)} with dtype {like.dtype} '
                f'on {like.device}, got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}'
            )
    return PATTERN(
        backend, q.device, q, k, v,
        q_norm=q if q_norm is None else q_norm, k_norm=k if k_norm is None else k_norm, eps=float(eps),
        rank_augmentation=bool(rank_augmentation),
        scale=resolve_scale(op, scale, q) if rank_augmentation else None,
    )

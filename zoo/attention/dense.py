"""Dense multi-head attention: ``softmax(q k^T * scale + bias) v`` over all keys.

Paths:

- ``'reference'`` (alias ``'math'``): the logits built explicitly, bias added, masks applied,
  softmax in at least float32; the ground truth.
- ``'sdpa'`` (default): ``torch.nn.functional.scaled_dot_product_attention``, the bias, the
  bool mask and the causal mask merged into its one ``attn_mask``; a finite learned bias on
  CPU (which SDPA would send to its math kernel) is applied explicitly instead
  (``_math.learned_bias_on_cpu``).
- ``'xformers'`` (CUDA only): ``xformers.ops.memory_efficient_attention`` on its
  (B, N, heads, d) layout, with its ``LowerTriangularMask`` for a plain causal call, else one
  dense (B, heads, Nq, Nk) float tensor bias holding the bias and every mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._backends import Pattern
from ._checks import check_broadcast, check_float_bias, check_qkv, describe, resolve_scale
from ._math import attend, attend_biased, learned_bias_on_cpu

__all__ = ['dense_attention']

# xFormers' kernels read a tensor bias in rows that must start on 8-element boundaries.
XFORMERS_BIAS_ALIGNMENT = 8


def _reference(
    q: Tensor, k: Tensor, v: Tensor, *, attn_bias: Tensor | None, attn_mask: Tensor | None,
    scale: float, is_causal: bool, dropout_p: float,
) -> Tensor:
    logits = (q @ k.transpose(-2, -1)) * scale
    if attn_bias is not None:
        logits = logits + attn_bias
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float('-inf'))
    if is_causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        causal = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~causal, float('-inf'))
    return attend(logits, v, dropout_p)


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, *, attn_bias: Tensor | None, attn_mask: Tensor | None,
    scale: float, is_causal: bool, dropout_p: float,
) -> Tensor:
    if attn_mask is None and not is_causal and dropout_p == 0.0 and learned_bias_on_cpu(q, attn_bias):
        return attend_biased(q, k, v, attn_bias, scale)
    allowed = attn_mask
    if is_causal and (attn_bias is not None or attn_mask is not None):
        # SDPA refuses is_causal together with a mask, so the causal mask joins the others.
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        allowed = causal if allowed is None else allowed & causal
        is_causal = False
    if attn_bias is None:
        mask = allowed
    elif allowed is None:
        mask = attn_bias
    else:
        mask = torch.where(allowed, attn_bias, float('-inf'))
    while mask is not None and mask.ndim < q.ndim:
        # Same broadcast, but SDPA's fused CPU kernel takes only masks of q's rank: a lower-rank
        # one would silently send it down the slow math path.
        mask = mask.unsqueeze(0)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


def xformers_bias(shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A zero (B, heads, Nq, Nk) bias whose rows start on xFormers' 8-element boundaries."""
    *lead, n_k = shape
    padded = -(-n_k // XFORMERS_BIAS_ALIGNMENT) * XFORMERS_BIAS_ALIGNMENT
    return torch.zeros(*lead, padded, dtype=dtype, device=device)[..., :n_k]


def _xformers(
    q: Tensor, k: Tensor, v: Tensor, *, attn_bias: Tensor | None, attn_mask: Tensor | None,
    scale: float, is_causal: bool, dropout_p: float,
) -> Tensor:
    import xformers.ops as xops  # the backend's availability check has imported it

    B, h, n_q, _ = q.shape
    n_k = k.shape[2]
    if attn_bias is None and attn_mask is None:
        bias = xops.LowerTriangularMask() if is_causal else None
    else:
        bias = xformers_bias((B, h, n_q, n_k), q.dtype, q.device)
        if attn_bias is not None:
            bias.copy_(attn_bias.expand(B, h, n_q, n_k))
        if attn_mask is not None:
            bias.masked_fill_(~attn_mask, float('-inf'))
        if is_causal:
            causal = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
            bias.masked_fill_(~causal, float('-inf'))
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p, scale=scale
    )
    return out.transpose(1, 2)


PATTERN = Pattern('dense_attention', {'reference': _reference, 'sdpa': _sdpa, 'xformers': _xformers}, default='sdpa')


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_bias: Tensor | None = None,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> Tensor:
    """Multi-head softmax attention ``softmax(q k^T * scale + bias) v``.

    A query whose keys are all masked out gets a zero output from 'reference' and from SDPA's
    math and CPU kernels (other kernels may give NaN there).

    Args:
        q: Queries, (B, heads, Nq, head_dim).
        k: Keys, (B, heads, Nk, head_dim).
        v: Values, (B, heads, Nk, dv).
        attn_bias: Additive float bias broadcastable to (B, heads, Nq, Nk), cast to q's dtype.
        attn_mask: Bool mask broadcastable to (B, heads, Nq, Nk); True means "may attend".
        scale: Logit scale; None means ``head_dim ** -0.5``.
        is_causal: Query i attends keys j <= i only (top-left aligned when Nq != Nk).
        dropout_p: Dropout on the attention weights; pass 0 in eval mode.
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default) or ``'xformers'`` (CUDA only).

    Returns:
        (B, heads, Nq, dv).
    """
    op = 'dense_attention'
    check_qkv(op, q, k, v, '(B, heads, N, head_dim)', shared=2)
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    attn_bias = check_float_bias(op, 'attn_bias', attn_bias, q)
    if attn_bias is not None:
        check_broadcast(op, 'attn_bias', attn_bias, target, '(B, heads, Nq, Nk)')
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
            raise TypeError(
                f'{op}: attn_mask must be a bool tensor (True = attend), got {describe(attn_mask)}; '
                'pass an additive float mask as attn_bias'
            )
        if attn_mask.device != q.device:
            raise ValueError(f'{op}: attn_mask is on {attn_mask.device} but q is on {q.device}')
        check_broadcast(op, 'attn_mask', attn_mask, target, '(B, heads, Nq, Nk)')
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f'{op}: dropout_p must be in [0, 1), got {dropout_p}')
    return PATTERN(
        backend, q.device, q, k, v,
        attn_bias=attn_bias, attn_mask=attn_mask, scale=resolve_scale(op, scale, q),
        is_causal=bool(is_causal), dropout_p=float(dropout_p),
    )

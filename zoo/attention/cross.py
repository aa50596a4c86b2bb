"""Bidirectional cross-attention with one shared attention matrix (LookupViT's MHBC).

LookupViT (arXiv 2407.12753) exchanges information between a few "compressed" tokens and
many "lookup" tokens in two steps of one block:

1. gather (MHBC lookup -> compressed): ``A = softmax(q_c k_l^T * scale)``, shape
   (B, heads, M, N), normalised over the N lookup tokens; ``out_c = A v_l``;
2. infuse (MHBC compressed -> lookup), later in the block, once the compressed tokens have been
   refined: the same matrix, transposed, ``out_l = A^T v_c``, so no new queries/keys and no
   new softmax.

One path each, ``'reference'`` (alias ``'math'``; the default): step 2 needs the weights of
step 1, which no fused kernel returns (SDPA, flash and xFormers' memory-efficient attention give
only the output), so step 1 must materialise ``A`` anyway, and an SDPA call for its output
would compute the same logits a second time. Materialising is cheap here: ``A`` has M x N
entries per head with M the small compressed grid (9..100 tokens), i.e. it grows linearly with
the image, like the values. Both ops still go through the backend selection, so a global
setting names them when it falls back and ``record_ops`` sees them.

:func:`gather_attention` and :func:`infuse_attention` are the exact formula (softmax in at least
float32); ``tests/test_attention_cross.py`` checks them against a per-head loop and the gather
output against :func:`zoo.attention.dense_attention` (SDPA with queries and keys of different
lengths).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._backends import Pattern
from ._checks import resolve_scale

__all__ = ['gather_attention', 'infuse_attention']


def _check(name: str, t: Tensor, what: str) -> None:
    if not isinstance(t, Tensor) or t.ndim != 4:
        raise ValueError(f'{name} must be a 4-D tensor {what}, got '
                         f'{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}')
    if not t.is_floating_point():
        raise TypeError(f'{name} must be floating point, got {t.dtype}')


def _gather(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    dtype = torch.promote_types(q.dtype, torch.float32)
    weights = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1, dtype=dtype).to(v.dtype)
    return weights @ v, weights


def _infuse(weights: Tensor, v: Tensor) -> Tensor:
    return weights.transpose(-2, -1) @ v.to(weights.dtype)


GATHER = Pattern('gather_attention', {'reference': _gather}, default='reference')
INFUSE = Pattern('infuse_attention', {'reference': _infuse}, default='reference')


def gather_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None,
                     backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Cross-attention of few queries over many keys, returning its weights for reuse.

    Args:
        q: queries of the compressed tokens, (B, heads, M, head_dim).
        k: keys of the lookup tokens, (B, heads, N, head_dim).
        v: values of the lookup tokens, (B, heads, N, dv).
        scale: logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'`` (default and only path; see the module docstring).

    Returns:
        ``(out, weights)``: ``out = weights @ v`` of shape (B, heads, M, dv) and
        ``weights = softmax(q k^T * scale)`` over the N keys, (B, heads, M, N), in v's dtype.
    """
    for name, t in (('q', q), ('k', k), ('v', v)):
        _check(name, t, '(B, heads, tokens, head_dim)')
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f'gather_attention: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, '
                         f'v {tuple(v.shape)}')
    return GATHER(backend, q.device, q, k, v, resolve_scale('gather_attention', scale, q))


def infuse_attention(weights: Tensor, v: Tensor, *, backend: str | None = None) -> Tensor:
    """The reverse direction with the gather weights reused: ``weights^T @ v``.

    Args:
        weights: the ``weights`` returned by :func:`gather_attention`, (B, heads, M, N).
        v: values of the (refined) compressed tokens, (B, heads, M, dv).
        backend: ``'reference'``/``'math'`` (default and only path).

    Returns:
        (B, heads, N, dv). Row n is ``sum_m A[m, n] v_m``: the weights are not renormalised over
        the compressed tokens (the matrix is reused as is, as the paper describes).
    """
    _check('weights', weights, '(B, heads, M, N)')
    _check('v', v, '(B, heads, M, dv)')
    if weights.shape[:3] != v.shape[:3]:
        raise ValueError(f'infuse_attention: weights {tuple(weights.shape)} and v {tuple(v.shape)} '
                         'must share (B, heads, M)')
    return INFUSE(backend, weights.device, weights, v)

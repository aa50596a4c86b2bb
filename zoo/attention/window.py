"""Window attention: attention within non-overlapping windows of a feature map (Swin-style
windows, LITv2's hi-fi windows, DaViT's spatial windows).

Paths:

- ``'reference'`` (alias ``'math'``): windows partitioned, logits built explicitly; the ground
  truth.
- ``'sdpa'`` (default): one ``F.scaled_dot_product_attention`` call with the windows folded
  into the head dim, so that a per-window bias broadcasts over the batch as a view (a finite
  learned bias on CPU is applied explicitly in the same layout: ``_math.learned_bias_on_cpu``).
- ``'natten'``: NATTEN's blocked neighbourhood attention, ``natten.functional.na2d`` with
  ``kernel_size = stride = window``: query tile ``(i, j)`` of ``wh x ww`` tokens shares the
  neighbourhood of ``wh x ww`` keys, which on a map that is a multiple of the window is exactly
  window ``(i, j)``. NATTEN >= 0.20 has no additive bias, so calls with ``attn_bias`` are
  refused; on CPU it runs Flex Attention, forward only (:func:`natten_refusal` lists every
  limit).
- ``'xformers'`` (CUDA only): ``memory_efficient_attention`` over the windows laid end to end
  under a ``BlockDiagonalMask`` (one block per window) without a bias; with a bias, the
  windows ride along the batch with a dense (windows, heads, N, N) tensor bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._backends import BackendNotSupported, Pattern
from ._checks import check_broadcast, check_float_bias, check_qkv, positive_int, resolve_scale
from ._math import attend, attend_biased, learned_bias_on_cpu, merge_windows, partition_windows, window_bias
from .dense import xformers_bias

__all__ = ['window_attention', 'natten_refusal']

_NATTEN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NATTEN_LIMITS = ('no attention bias; forward only on CPU; float32, float16 or bfloat16 with one head_dim '
                 'for q, k and v (on CPU a power of two >= 8)')


def _reference(q: Tensor, k: Tensor, v: Tensor, window_size: tuple[int, int], *,
               attn_bias: Tensor | None, scale: float) -> Tensor:
    qw, kw, vw = (partition_windows(t, window_size) for t in (q, k, v))
    logits = (qw @ kw.transpose(-2, -1)) * scale  # (B, heads, nW, N, N)
    if attn_bias is not None:
        logits = logits + window_bias(attn_bias)
    return merge_windows(attend(logits, vw), q.shape[2:4], window_size)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, window_size: tuple[int, int], *,
          attn_bias: Tensor | None, scale: float) -> Tensor:
    B, h = q.shape[:2]
    qw, kw, vw = (partition_windows(t, window_size) for t in (q, k, v))
    if learned_bias_on_cpu(q, attn_bias):
        # (heads, nW, N, N) broadcasts over (B, heads, nW, N, N) logits: no per-window copy
        return merge_windows(attend_biased(qw, kw, vw, window_bias(attn_bias), scale), q.shape[2:4], window_size)
    # (B, heads, nW, N, c) -> (B, heads * nW, N, c): windows ride along the heads, so a
    # per-window bias broadcasts over the batch as a (1, heads * nW, N, N) view.
    n_windows, n = qw.shape[2], qw.shape[3]
    qw, kw, vw = (t.reshape(B, h * n_windows, n, t.shape[-1]) for t in (qw, kw, vw))
    mask = None
    if attn_bias is not None:
        mask = window_bias(attn_bias).expand(h, n_windows, n, n).reshape(1, h * n_windows, n, n)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    return merge_windows(out.reshape(B, h, n_windows, n, out.shape[-1]), q.shape[2:4], window_size)


# --- NATTEN ---------------------------------------------------------------------------------


def natten_refusal(q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor | None) -> str | None:
    """Why NATTEN cannot compute this call exactly (a phrase after "the 'natten' backend"), or None."""
    if attn_bias is not None:
        return ('cannot apply an attention bias (NATTEN >= 0.20 has no additive or relative position '
                "bias); use backend 'sdpa' or 'reference'")
    if q.device.type == 'cpu' and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return ('is forward-only on cpu (NATTEN runs Flex Attention there, which has no CPU backward); call '
                "it under torch.no_grad() or torch.inference_mode(), or use backend 'sdpa' to train on cpu")
    if q.dtype not in _NATTEN_DTYPES:
        return f'takes float32, float16 and bfloat16, not {q.dtype}'
    d, dv = q.shape[-1], v.shape[-1]
    if d != dv:
        return f'needs one head_dim for q, k and v, got {d} for q/k and {dv} for v'
    if q.device.type == 'cpu' and (d < 8 or d & (d - 1)):
        return f'takes on cpu (Flex Attention) a power-of-two head_dim of at least 8, got {d}'
    if q.shape[0] == 0:
        return 'has no path for an empty batch'
    return None


def natten_blocked(op: str, q: Tensor, k: Tensor, v: Tensor, tile: tuple[int, int], dilation: int,
                   scale: float) -> Tensor:
    """``natten.functional.na2d`` with ``kernel_size = stride = tile`` on (B, heads, H, W, d) tensors.

    Every ``tile`` of queries of each dilation group (the tokens whose row and column have the
    same remainders modulo ``dilation``) attends to the same ``tile`` of keys of its group: on
    a map that is a multiple of ``dilation * tile``, exactly the tile (window) it lies in.
    """
    from natten.functional import na2d  # the backend's availability check has imported it

    def heads_last(t: Tensor) -> Tensor:  # NATTEN's layout: (B, H, W, heads, d)
        return t.permute(0, 2, 3, 1, 4)

    try:
        out = na2d(heads_last(q), heads_last(k), heads_last(v),
                   kernel_size=tile, stride=tile, dilation=dilation, scale=scale)
    except NotImplementedError as exc:  # NATTEN found no kernel for these inputs
        raise BackendNotSupported(
            f"{op}: the 'natten' backend has no kernel for head_dim={q.shape[-1]}, dtype={q.dtype} on "
            f"{q.device.type} ({exc}); use backend 'sdpa' or 'reference'"
        ) from exc
    return out.permute(0, 3, 1, 2, 4)


def _natten(q: Tensor, k: Tensor, v: Tensor, window_size: tuple[int, int], *,
            attn_bias: Tensor | None, scale: float) -> Tensor:
    return natten_blocked('window_attention', q, k, v, window_size, 1, scale)


def _natten_can_run(q: Tensor, k: Tensor, v: Tensor, window_size: tuple[int, int], *,
                    attn_bias: Tensor | None, scale: float) -> str | None:
    return natten_refusal(q, k, v, attn_bias)


# --- xFormers -------------------------------------------------------------------------------


def xformers_windows(qw: Tensor, kw: Tensor, vw: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """xFormers attention within windows: (B, heads, nW, N, c) in, (B, heads, nW, N, dv) out.

    Args:
        qw, kw, vw: The windows.
        bias: None, or an additive bias broadcastable to (B, nW, heads, N, N).
        scale: Logit scale.
    """
    import xformers.ops as xops  # the backend's availability check has imported it
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    B, h, n_windows, n, _ = qw.shape
    if bias is None:
        # The windows end to end as one sequence, one diagonal block per window.
        rows = [t.permute(0, 2, 3, 1, 4).reshape(1, B * n_windows * n, h, t.shape[-1]) for t in (qw, kw, vw)]
        mask = BlockDiagonalMask.from_seqlens([n] * (B * n_windows))
        out = xops.memory_efficient_attention(*rows, attn_bias=mask, scale=scale)
    else:
        rows = [t.permute(0, 2, 3, 1, 4).reshape(B * n_windows, n, h, t.shape[-1]) for t in (qw, kw, vw)]
        dense_bias = xformers_bias((B * n_windows, h, n, n), qw.dtype, qw.device)
        dense_bias.unflatten(0, (B, n_windows)).copy_(bias)
        out = xops.memory_efficient_attention(*rows, attn_bias=dense_bias, scale=scale)
    return out.reshape(B, n_windows, n, h, out.shape[-1]).permute(0, 3, 1, 2, 4)


def _xformers(q: Tensor, k: Tensor, v: Tensor, window_size: tuple[int, int], *,
              attn_bias: Tensor | None, scale: float) -> Tensor:
    qw, kw, vw = (partition_windows(t, window_size) for t in (q, k, v))
    bias = None if attn_bias is None else window_bias(attn_bias).transpose(0, 1)  # (nW or 1, heads, N, N)
    out = xformers_windows(qw, kw, vw, bias, scale)
    return merge_windows(out, q.shape[2:4], window_size)


PATTERN = Pattern(
    'window_attention',
    {'reference': _reference, 'sdpa': _sdpa, 'natten': _natten, 'xformers': _xformers},
    default='sdpa',
    can_run={'natten': _natten_can_run},
    limits={'natten': NATTEN_LIMITS},
)


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_size: int | tuple[int, int],
    *,
    attn_bias: Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Attention within non-overlapping windows of a feature map (Swin-style).

    Windows are numbered row-major over the (H / wh, W / ww) grid, tokens row-major within a
    window, as in Swin's window partition.

    Args:
        q: Queries, (B, heads, H, W, head_dim).
        k: Keys, (B, heads, H, W, head_dim).
        v: Values, (B, heads, H, W, dv).
        window_size: (wh, ww), or one int for square windows; H and W must be multiples.
        attn_bias: Additive bias over the wh*ww tokens of a window: (heads, N, N), the same for
            every window (relative position bias), or (nW, heads, N, N) per window (relative
            position bias plus shift mask); size-1 dims broadcast.
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default), ``'natten'`` (no
            ``attn_bias``; forward only on CPU) or ``'xformers'`` (CUDA only).

    Returns:
        (B, heads, H, W, dv).
    """
    op = 'window_attention'
    check_qkv(op, q, k, v, '(B, heads, H, W, head_dim)', shared=4)
    sizes = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
    if len(sizes) != 2:
        raise ValueError(f'{op}: window_size must be an int or (wh, ww), got {window_size!r}')
    wh, ww = (positive_int(op, 'window_size', s) for s in sizes)
    H, W = q.shape[2], q.shape[3]
    if H % wh or W % ww:
        raise ValueError(
            f'{op}: the feature map H x W = {H} x {W} is not a multiple of the window {wh} x {ww}; '
            'the caller must pad it to a multiple first (e.g. with zoo.layers padding) and crop '
            'the output'
        )
    attn_bias = check_float_bias(op, 'attn_bias', attn_bias, q)
    if attn_bias is not None:
        heads, n, n_windows = q.shape[1], wh * ww, (H // wh) * (W // ww)
        if attn_bias.dim() == 3:
            check_broadcast(op, 'attn_bias', attn_bias, (heads, n, n), '(heads, N, N)')
        elif attn_bias.dim() == 4:
            check_broadcast(op, 'attn_bias', attn_bias, (n_windows, heads, n, n), '(nW, heads, N, N)')
        else:
            raise ValueError(
                f'{op}: attn_bias must be (heads, N, N) or (nW, heads, N, N) with N = {n}, '
                f'nW = {n_windows}; got shape {tuple(attn_bias.shape)}'
            )
    return PATTERN(
        backend, q.device, q, k, v, (wh, ww),
        attn_bias=attn_bias, scale=resolve_scale(op, scale, q),
    )

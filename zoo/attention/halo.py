"""Halo attention (HaloNet): blocked local attention whose keys are each block grown by a halo.

Paper: `Scaling Local Self-Attention for Parameter Efficient Visual Backbones` -
https://arxiv.org/abs/2103.12731. The semantics are timm's ``HaloAttn`` (the reference, the
authors released no code), extended to any map size:

- the key/value map (H x W) is cut into ``block_size`` x ``block_size`` blocks, counted from
  the top left; the window of a block is the block grown by ``halo_size`` pixels on every side
  (``win = block_size + 2 * halo_size``), keys and values outside the map being zero (they do
  take part in the softmax, with logit 0 plus their relative logits, as the zero padding of
  timm's layer gives). A map that is not a multiple of the block size is treated as extended
  at the bottom/right by the same zeros, and the output is cropped back;
- queries may be subsampled (``query_stride`` 2: timm's strided halo blocks, q computed at
  stride 2): query block ``(i, j)`` is the ``block_size / query_stride`` square at the same
  block position of the query map (``ceil(H / query_stride)`` x ``ceil(W / query_stride)``)
  and attends the window of key block ``(i, j)``;
- relative logits (timm's ``height_rel`` / ``width_rel``, shape ``(2 * win - 1, head_dim)``):
  a query at position ``(py, px)`` in its block and a key at ``(ky, kx)`` in its window add
  ``q . rel_h[ky - py + win - 1] + q . rel_w[kx - px + win - 1]`` (the query position counted
  on the subsampled grid, as timm does). These logits depend on the query, so they are not a
  fixed bias: both backends select, once per call, the ``(block / query_stride, win,
  head_dim)`` rows of each table that the positions use (the row indices are cached per
  device) and add ``q @ rows^T``; ``rel_scaled`` multiplies them by ``scale`` as well
  (timm's ``scale_pos_embed``).

Paths (chosen by the rule of every ``zoo.attention`` op, see ``zoo.attention._backends``:
``backend=``, then :func:`zoo.attention.use_backend`, then ``$ZOO_ATTENTION_BACKEND``, else
``'sdpa'``):

- ``'reference'`` (alias ``'math'``): every query gathers its own window with ``F.unfold``
  and the relative logits by explicit index; plain softmax. Simple and slow: the ground truth.
- ``'sdpa'``: the query blocks and the key/value windows gathered (one ``index_select``
  each, indices from ``arange`` of the traced sizes: no ``unfold``, so traced ONNX exports
  keep H and W dynamic) straight into ``F.scaled_dot_product_attention``'s layout, the
  relative logits as its additive float mask, and one more gather back to the map. When the
  q/k and v head dims differ, zero channels bring the smaller up to the larger (the fused
  CPU kernel needs one head dim; zeros change no logit).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.tracing import is_tracing

from ._backends import Pattern
from ._checks import check_float_bias, check_qkv, positive_int, resolve_scale

__all__ = ['halo_attention']

_OP = 'halo_attention'
_INDEX_CACHE: dict[tuple[int, int, torch.device], Tensor] = {}


def _rel_index(positions: int, win: int, device: torch.device) -> Tensor:
    """``(positions, win)`` rows of a ``(2 win - 1)`` table: key ``k`` from query ``p`` -> ``k - p + win - 1``."""
    key = (positions, win, device)
    index = _INDEX_CACHE.get(key)
    if index is None:  # a normal tensor even under inference_mode, so autograd may save it later
        with torch.inference_mode(False):
            index = _INDEX_CACHE[key] = _index_table(positions, win, device)
    return index


def _index_table(positions: int, win: int, device: torch.device) -> Tensor:
    p = torch.arange(positions, device=device)[:, None]
    k = torch.arange(win, device=device)[None, :]
    return k - p + win - 1


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


# --- backends -------------------------------------------------------------------------------


def _reference(q: Tensor, k: Tensor, v: Tensor, block: int, halo: int, stride: int,
               rel_h: Tensor | None, rel_w: Tensor | None, scale: float, rel_scaled: bool) -> Tensor:
    B, heads, Hq, Wq, dq = q.shape
    H, W, dv = k.shape[2], k.shape[3], v.shape[-1]
    bq, win = block // stride, block + 2 * halo
    nh, nw = _ceil_div(H, block), _ceil_div(W, block)
    # Every window of the zero-extended map, (B * heads, d, win * win, nh * nw).
    windows = []
    for t in (k, v):
        t = t.permute(0, 1, 4, 2, 3).flatten(0, 1)
        t = F.pad(t, (halo, halo + nw * block - W, halo, halo + nh * block - H))
        windows.append(F.unfold(t, win, stride=block).unflatten(1, (t.shape[1], win * win)))
    kw, vw = windows
    ys, xs = torch.arange(Hq, device=q.device), torch.arange(Wq, device=q.device)
    block_of = ((ys // bq)[:, None] * nw + (xs // bq)[None, :]).flatten()  # per query, row-major
    kq = kw[..., block_of].permute(0, 3, 2, 1)  # (B * heads, Hq * Wq, win * win, dq)
    vq = vw[..., block_of].permute(0, 3, 2, 1)
    qf = q.flatten(0, 1).flatten(1, 2)  # (B * heads, Hq * Wq, dq)
    logits = torch.einsum('nqd,nqkd->nqk', qf, kq) * scale
    if rel_h is not None:
        index = torch.arange(win, device=q.device)[None, :] + win - 1
        rows_h = rel_h[index - (ys % bq)[:, None]]  # (Hq, win, dq): per query row
        rows_w = rel_w[index - (xs % bq)[:, None]]  # (Wq, win, dq)
        qmap = qf.unflatten(1, (Hq, Wq))
        rel = (torch.einsum('nyxd,ykd->nyxk', qmap, rows_h)[..., :, None]
               + torch.einsum('nyxd,xkd->nyxk', qmap, rows_w)[..., None, :])
        logits = logits + rel.flatten(-2).flatten(1, 2) * (scale if rel_scaled else 1.0)
    weights = logits.softmax(dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(v.dtype)
    out = torch.einsum('nqk,nqkd->nqd', weights, vq)
    return out.reshape(B, heads, Hq, Wq, dv)


def _gather_windows(x: Tensor, n_rows: int, n_cols: int, step: int, size: int) -> Tensor:
    """(B, h, H', W', d) -> (B, h * n_rows * n_cols, size * size, d): the ``size`` squares at
    ``(i * step, j * step)``, each row-major, blocks row-major; one gather that writes the final
    layout. Its indices are computed from the (traced) sizes with ``arange``, not ``unfold``, so
    ONNX exports keep H and W dynamic."""
    B, h, height, width, d = x.shape
    offsets = torch.arange(size, device=x.device)
    rows = (torch.arange(n_rows, device=x.device) * step)[:, None] + offsets  # (n_rows, size)
    cols = (torch.arange(n_cols, device=x.device) * step)[:, None] + offsets
    index = (rows[:, None, :, None] * width + cols[None, :, None, :]).reshape(-1)
    x = x.reshape(B, h, height * width, d).index_select(2, index)
    return x.reshape(B, h * n_rows * n_cols, size * size, d)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, block: int, halo: int, stride: int,
          rel_h: Tensor | None, rel_w: Tensor | None, scale: float, rel_scaled: bool) -> Tensor:
    B, heads, Hq, Wq, dq = q.shape
    H, W, dv = k.shape[2], k.shape[3], v.shape[-1]
    bq, win = block // stride, block + 2 * halo
    nh, nw = (H + block - 1) // block, (W + block - 1) // block
    # SDPA's fused CPU kernel needs one head dim for q, k and v: zero channels (which change no
    # logit) bring the smaller one up to the larger, e.g. ECA-HaloNeXt's 16-d q/k with 32-d v.
    d = max(dq, dv)
    # Zero pads: the halo around the keys/values and, for all three, the bottom/right up to the
    # block multiple (unconditional, zero-sized when divisible: traced exports keep the sizes).
    pad = (halo, halo + nw * block - W, halo, halo + nh * block - H)
    kw = _gather_windows(F.pad(k, (0, d - dq) + pad), nh, nw, block, win)  # (B, heads * nh * nw, win * win, d)
    vw = _gather_windows(F.pad(v, (0, d - dv) + pad), nh, nw, block, win)
    qb = _gather_windows(F.pad(q, (0, d - dq, 0, nw * bq - Wq, 0, nh * bq - Hq)), nh, nw, bq, bq)
    mask = None
    if rel_h is not None:
        index = _rel_index(bq, win, q.device)
        rows_h, rows_w = (F.pad(t, (0, d - dq))[index].transpose(1, 2) for t in (rel_h, rel_w))  # (bq, d, win)
        # Per query row py (column px) its own (d, win) rows: one batched matmul over py (px).
        n = heads * nh * nw
        grid = qb.reshape(B, n, bq, bq, d)
        rel_rows = (grid.permute(2, 0, 1, 3, 4).reshape(bq, -1, d) @ rows_h).reshape(bq, B, n, bq, win)
        rel_cols = (grid.permute(3, 0, 1, 2, 4).reshape(bq, -1, d) @ rows_w).reshape(bq, B, n, bq, win)
        mask = (rel_rows.permute(1, 2, 0, 3, 4)[..., :, None] + rel_cols.permute(1, 2, 3, 0, 4)[..., None, :])
        mask = mask.reshape(B, n, bq * bq, win * win)
        if rel_scaled:
            mask = mask * scale
    out = F.scaled_dot_product_attention(qb, kw, vw, attn_mask=mask, scale=scale)
    # Back to the map with a second gather: query (y, x) sits in block (y // bq, x // bq) at
    # (y % bq, x % bq); only the Hq x Wq real queries are read.
    ys, xs = torch.arange(Hq, device=q.device), torch.arange(Wq, device=q.device)
    index = ((ys // bq * nw)[:, None] + (xs // bq)[None, :]) * (bq * bq) + ((ys % bq * bq)[:, None] + (xs % bq)[None, :])
    out = out.reshape(B, heads, nh * nw * bq * bq, d).index_select(2, index.reshape(-1))
    return out.reshape(B, heads, Hq, Wq, d)[..., :dv]


# --- the public op --------------------------------------------------------------------------


PATTERN = Pattern(_OP, {'reference': _reference, 'sdpa': _sdpa}, default='sdpa')


def halo_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_size: int,
    halo_size: int,
    *,
    query_stride: int = 1,
    rel_h: Tensor | None = None,
    rel_w: Tensor | None = None,
    rel_scaled: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """HaloNet's blocked local attention with halos, on maps of any size (see the module docstring).

    Args:
        q: Queries, (B, heads, Hq, Wq, head_dim), ``Hq = ceil(H / query_stride)`` (likewise Wq).
        k: Keys, (B, heads, H, W, head_dim).
        v: Values, (B, heads, H, W, dv).
        block_size: Side of the key blocks; ``query_stride`` must divide it.
        halo_size: Pixels added on every side of a block to make its window; at most
            ``block_size / 2`` (every HaloNet: 2 or 3 with blocks of 8).
        query_stride: 1, or the subsampling of the query map (timm's strided halo blocks).
        rel_h: Relative embeddings along the height, (2 * win - 1, head_dim), with
            ``win = block_size + 2 * halo_size``; given together with ``rel_w`` or not at all.
        rel_w: Relative embeddings along the width, same shape.
        rel_scaled: Multiply the relative logits by ``scale`` too (timm's ``scale_pos_embed``).
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'`` or ``'sdpa'`` (default).

    Returns:
        (B, heads, Hq, Wq, dv).
    """
    check_qkv(_OP, q, k, v, '(B, heads, H, W, head_dim)', shared=2)
    block_size = positive_int(_OP, 'block_size', block_size)
    query_stride = positive_int(_OP, 'query_stride', query_stride)
    if isinstance(halo_size, bool) or not isinstance(halo_size, int) or not 0 <= 2 * halo_size <= block_size:
        raise ValueError(f'{_OP}: halo_size must be an int in [0, block_size / 2 = {block_size / 2:g}], '
                         f'got {halo_size!r}')
    if block_size % query_stride:
        raise ValueError(f'{_OP}: query_stride {query_stride} does not divide block_size {block_size}')
    H, W = k.shape[2], k.shape[3]
    expected = (_ceil_div(H, query_stride), _ceil_div(W, query_stride))
    if not is_tracing() and tuple(q.shape[2:4]) != expected:
        raise ValueError(f'{_OP}: q must be (B, heads, ceil(H / {query_stride}), ceil(W / {query_stride}), '
                         f'head_dim) = {expected} spatially for keys of {H} x {W}, got {tuple(q.shape)}')
    if (rel_h is None) != (rel_w is None):
        raise ValueError(f'{_OP}: give both rel_h and rel_w, or neither')
    if rel_h is not None:
        win = block_size + 2 * halo_size
        shape = (2 * win - 1, q.shape[-1])
        for name, t in (('rel_h', rel_h), ('rel_w', rel_w)):
            if not isinstance(t, Tensor) or tuple(t.shape) != shape:
                raise ValueError(f'{_OP}: {name} must be (2 * win - 1, head_dim) = {shape}, '
                                 f'got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}')
        rel_h = check_float_bias(_OP, 'rel_h', rel_h, q)
        rel_w = check_float_bias(_OP, 'rel_w', rel_w, q)
    scale = resolve_scale(_OP, scale, q)
    return PATTERN(backend, q.device, q, k, v, block_size, halo_size, query_stride, rel_h, rel_w, scale,
                   bool(rel_scaled))

"""Grouped attention on feature maps of any size: dense groups (SDA) and dilated groups (LDA).

CrossFormer's two attentions both split a feature map into groups of ``gh x gw`` tokens and
run attention inside each group with an additive bias shared by all groups:

- short-distance attention (SDA, ``interval=1``): the groups are adjacent ``gh x gw`` windows;
- long-distance attention (LDA, ``interval=I``): a group takes every ``I``-th token of an
  ``(I*gh) x (I*gw)`` block, i.e. the tokens whose row and column have the same remainders
  modulo ``I`` inside the block.

The original CrossFormer release (v1) forms its LDA groups over the whole map instead: the
tokens with the same row and column remainders modulo ``I`` anywhere in the map. That is the
case of one block covering the padded map, ``group_size = (ceil(H / I), ceil(W / I))``
(:func:`strided_group_size`), so it needs no other kernel.

:func:`grouped_attention` pads the map to a multiple of the block (``(I*gh) x (I*gw)``; SDA:
``gh x gw``) at the bottom/right, gives the padded keys a large negative bias (the official
dense backbone's -1e6, so real tokens attend only to real tokens), permutes the rows and
columns so that every dilated group becomes a contiguous window, runs
:func:`zoo.attention.window_attention` (so the usual backend selection applies) and undoes the
permutation and padding. When one block covers the whole unpadded map (v1's LDA, or an LDA
map of exactly ``G*I`` tokens a side), the ``I x I`` groups ride along the batch instead
(:func:`zoo.attention.dense_attention` with the shared bias broadcast), so the bias is not
copied once per group. :func:`grouped_attention_reference` computes the same thing as one
dense attention over the real tokens with a "same group" mask, for tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dispatch import dense_attention, window_attention
from zoo.layers.tracing import is_tracing

__all__ = ['grouped_attention', 'grouped_attention_reference', 'strided_group_size', 'PAD_MASK_VALUE']

PAD_MASK_VALUE = -1e6  # the official additive bias of padded keys (-1e6, not -inf)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f'grouped_attention: {name} must be a positive int or a pair of them, got {value!r}')
    return pair


def strided_group_size(size: tuple[int, int], interval: int) -> tuple[int, int]:
    """The group of :func:`grouped_attention` that makes ``interval`` x ``interval`` groups,
    each spanning a whole ``H x W`` map (the tokens with the same row and column remainders
    modulo ``interval``): ``(ceil(H / I), ceil(W / I))``, so one block covers the padded map."""
    return -(-size[0] // interval), -(-size[1] // interval)


def _mask_value(dtype: torch.dtype) -> float:
    # -1e6 as the official code; half precision cannot hold it, so stay finite there.
    return max(PAD_MASK_VALUE, torch.finfo(dtype).min / 2)


def _dilate(x: Tensor, group: tuple[int, int], interval: int, inverse: bool = False) -> Tensor:
    """Permute rows/cols of (B, heads, H, W, c) so dilated groups become contiguous windows.

    Along an axis of length ``R * g * I``, position ``r*g*I + j*I + i`` (group ``(r, i)``, place
    ``j``) moves to ``(r*I + i)*g + j``; ``inverse`` moves it back.
    """
    if interval == 1:
        return x
    B, h, H, W, c = x.shape
    gh, gw = group
    inner = (interval, gh) if inverse else (gh, interval)
    x = x.reshape(B, h, H // (gh * interval), inner[0], inner[1], W // (gw * interval),
                  *((interval, gw) if inverse else (gw, interval)), c)
    return x.permute(0, 1, 2, 4, 3, 5, 7, 6, 8).reshape(B, h, H, W, c)


def grouped_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    group_size: int | tuple[int, int],
    *,
    interval: int = 1,
    attn_bias: Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Attention inside (dilated) groups of a feature map of any size.

    Args:
        q: Queries, (B, heads, H, W, head_dim); any H and W.
        k: Keys, (B, heads, H, W, head_dim).
        v: Values, (B, heads, H, W, dv).
        group_size: (gh, gw) tokens per group, or one int.
        interval: 1 for adjacent groups (SDA), ``I > 1`` for groups of tokens ``I`` apart (LDA).
        attn_bias: Additive bias over a group's tokens (row-major within the group), (heads,
            N, N) with N = gh * gw, the same for every group (e.g. a dynamic position bias).
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: the backend of :func:`zoo.attention.window_attention` (``'reference'`` or
            ``'sdpa'``; default: the usual selection rule).

    Returns:
        (B, heads, H, W, dv).
    """
    gh, gw = _pair(group_size, 'group_size')
    (interval, _) = _pair(interval, 'interval')
    if q.dim() != 5:
        raise ValueError(f'grouped_attention: q must be 5-D (B, heads, H, W, head_dim), got shape {tuple(q.shape)}')
    B, heads, H, W = q.shape[:4]
    bh, bw = gh * interval, gw * interval
    pad_h, pad_w = (H + bh - 1) // bh * bh - H, (W + bw - 1) // bw * bw - W
    padded = bool(pad_h or pad_w) or is_tracing()
    if not padded and interval > 1 and (H, W) == (bh, bw):
        return _strided_groups(q, k, v, interval, attn_bias, scale, backend)
    if padded:
        q, k, v = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
    q, k, v = (_dilate(t, (gh, gw), interval) for t in (q, k, v))
    bias = attn_bias
    if padded:
        Hp, Wp = H + pad_h, W + pad_w
        rows = torch.arange(Hp, device=q.device) < H
        cols = torch.arange(Wp, device=q.device) < W
        valid = (rows[:, None] & cols[None, :]).reshape(1, 1, Hp, Wp, 1)
        valid = _dilate(valid, (gh, gw), interval).reshape(Hp // gh, gh, Wp // gw, gw).transpose(1, 2)
        key_bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~valid, _mask_value(q.dtype)).reshape(1, -1, 1, gh * gw)  # (1, nW, 1, N)
        if attn_bias is None:
            bias = key_bias.transpose(0, 1)
        else:  # built heads-major: window_attention's SDPA path then folds it without a copy
            bias = (attn_bias.to(q.dtype).unsqueeze(1) + key_bias).transpose(0, 1)  # (nW, heads, N, N)
    out = window_attention(q, k, v, (gh, gw), attn_bias=bias, scale=scale, backend=backend)
    out = _dilate(out, (gh, gw), interval, inverse=True)
    return out[:, :, :H, :W] if padded else out


def _strided_groups(q: Tensor, k: Tensor, v: Tensor, interval: int, attn_bias: Tensor | None,
                    scale: float | None, backend: str | None) -> Tensor:
    """One block over a whole unpadded map (CrossFormer v1's LDA): its ``I x I`` groups ride
    along the batch, so the shared ``(heads, N, N)`` bias broadcasts over them. As windows
    along the heads (``window_attention``) the bias would be copied once per group: 64 x 3 x
    950^2 floats (0.7 GB) in CrossFormer-S's first stage at 800 x 1216."""
    B, heads, H, W, _ = q.shape
    gh, gw = H // interval, W // interval
    # token (y, x) = (gy * I + iy, gx * I + ix): group (iy, ix), place (gy, gx)
    q, k, v = (t.reshape(B, heads, gh, interval, gw, interval, t.shape[-1]).permute(0, 3, 5, 1, 2, 4, 6)
               .reshape(B * interval * interval, heads, gh * gw, t.shape[-1]) for t in (q, k, v))
    bias = None if attn_bias is None else attn_bias.to(q.dtype).unsqueeze(0)
    out = dense_attention(q, k, v, attn_bias=bias, scale=scale, backend=backend)
    out = out.reshape(B, interval, interval, heads, gh, gw, out.shape[-1]).permute(0, 3, 4, 1, 5, 2, 6)
    return out.reshape(B, heads, H, W, out.shape[-1])


def grouped_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    group_size: int | tuple[int, int],
    *,
    interval: int = 1,
    attn_bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """:func:`grouped_attention` as one dense attention over the real tokens (slow; for tests).

    Token ``(y, x)`` belongs to group ``(y // (I*gh), y % I, x // (I*gw), x % I)`` at place
    ``((y // I) % gh, (x // I) % gw)``; tokens attend to the tokens of their group, with the
    bias of their places. Padded tokens never appear, which is what the padding mask achieves.
    """
    gh, gw = _pair(group_size, 'group_size')
    B, heads, H, W, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    group = torch.stack([ys // (interval * gh), ys % interval, xs // (interval * gw), xs % interval], -1)
    same = (group[:, None, :] == group[None, :, :]).all(-1).to(q.device)
    place = ((ys // interval) % gh) * gw + (xs // interval) % gw
    logits = torch.einsum('bhnd,bhmd->bhnm', q.reshape(B, heads, H * W, d), k.reshape(B, heads, H * W, d)) * scale
    if attn_bias is not None:
        logits = logits + attn_bias[:, place[:, None], place[None, :]].to(q.dtype)
    weights = logits.masked_fill(~same, float('-inf')).softmax(-1)
    out = weights @ v.reshape(B, heads, H * W, v.shape[-1])
    return out.reshape(B, heads, H, W, out.shape[-1])

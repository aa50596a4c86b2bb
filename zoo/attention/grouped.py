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

The reference, SDPA and xFormers paths pad the map to a multiple of the block (``(I*gh) x
(I*gw)``; SDA: ``gh x gw``) at the bottom/right, give the padded keys a large negative bias
(the official dense backbone's -1e6, so real tokens attend only to real tokens), permute the
rows and columns so that every dilated group becomes a contiguous window, run the window
attention path of the same backend (``zoo.attention.window``) and undo the permutation and
padding. When one block covers the whole unpadded map (v1's LDA, or an LDA map of exactly
``G*I`` tokens a side), the ``I x I`` groups ride along the batch instead (the dense attention
path of the same backend, ``zoo.attention.dense``, with the shared bias broadcast), so the
bias is not copied once per group.

The ``'natten'`` path is NATTEN's dilated blocked neighbourhood attention,
``natten.functional.na2d(kernel_size=(gh, gw), stride=(gh, gw), dilation=I)``, on the map as
it is (no permutation): on a map that is a multiple of the block, the query tiles of each
dilation group share exactly the keys of their group. NATTEN >= 0.20 applies no bias, so it
serves only bias-free groups on such maps; CrossFormer's SDA/LDA always carry the dynamic
position bias (and, on other map sizes, the padding mask), so NATTEN cannot serve CrossFormer,
and its calls run on another backend (see :func:`zoo.attention.window.natten_refusal`).

:func:`grouped_attention_reference` computes the same thing as one dense attention over the
real tokens with a "same group" mask, for tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.tracing import is_tracing

from . import dense, window
from ._backends import Pattern
from ._checks import check_broadcast, check_float_bias, check_qkv, resolve_scale

__all__ = ['grouped_attention', 'grouped_attention_reference', 'strided_group_size', 'PAD_MASK_VALUE']

_OP = 'grouped_attention'
PAD_MASK_VALUE = -1e6  # the official additive bias of padded keys (-1e6, not -inf)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f'{_OP}: {name} must be a positive int or a pair of them, got {value!r}')
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


def _padding(shape: torch.Size, group: tuple[int, int], interval: int) -> tuple[int, int]:
    H, W = shape[2], shape[3]
    bh, bw = group[0] * interval, group[1] * interval
    return (H + bh - 1) // bh * bh - H, (W + bw - 1) // bw * bw - W


def _as_windows(window_path, dense_path, q: Tensor, k: Tensor, v: Tensor, group: tuple[int, int],
                interval: int, attn_bias: Tensor | None, scale: float) -> Tensor:
    """Grouped attention by a backend's window path (``window_path``; ``dense_path`` for one
    block over the whole unpadded map): pad, permute, attend, undo (see the module docstring)."""
    gh, gw = group
    B, heads, H, W = q.shape[:4]
    pad_h, pad_w = _padding(q.shape, group, interval)
    padded = bool(pad_h or pad_w) or is_tracing()
    if not padded and interval > 1 and (H, W) == (gh * interval, gw * interval):
        return _strided_groups(dense_path, q, k, v, interval, attn_bias, scale)
    if padded:
        q, k, v = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
    q, k, v = (_dilate(t, group, interval) for t in (q, k, v))
    bias = attn_bias
    if padded:
        Hp, Wp = H + pad_h, W + pad_w
        rows = torch.arange(Hp, device=q.device) < H
        cols = torch.arange(Wp, device=q.device) < W
        valid = (rows[:, None] & cols[None, :]).reshape(1, 1, Hp, Wp, 1)
        valid = _dilate(valid, group, interval).reshape(Hp // gh, gh, Wp // gw, gw).transpose(1, 2)
        key_bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~valid, _mask_value(q.dtype)).reshape(1, -1, 1, gh * gw)  # (1, nW, 1, N)
        if attn_bias is None:
            bias = key_bias.transpose(0, 1)
        else:  # built heads-major: the window SDPA path then folds it without a copy
            bias = (attn_bias.unsqueeze(1) + key_bias).transpose(0, 1)  # (nW, heads, N, N)
    out = window_path(q, k, v, group, attn_bias=bias, scale=scale)
    out = _dilate(out, group, interval, inverse=True)
    return out[:, :, :H, :W] if padded else out


def _strided_groups(dense_path, q: Tensor, k: Tensor, v: Tensor, interval: int, attn_bias: Tensor | None,
                    scale: float) -> Tensor:
    """One block over a whole unpadded map (CrossFormer v1's LDA): its ``I x I`` groups ride
    along the batch, so the shared ``(heads, N, N)`` bias broadcasts over them. As windows
    along the heads the bias would be copied once per group: 64 x 3 x 950^2 floats (0.7 GB)
    in CrossFormer-S's first stage at 800 x 1216."""
    B, heads, H, W, _ = q.shape
    gh, gw = H // interval, W // interval
    # token (y, x) = (gy * I + iy, gx * I + ix): group (iy, ix), place (gy, gx)
    q, k, v = (t.reshape(B, heads, gh, interval, gw, interval, t.shape[-1]).permute(0, 3, 5, 1, 2, 4, 6)
               .reshape(B * interval * interval, heads, gh * gw, t.shape[-1]) for t in (q, k, v))
    bias = None if attn_bias is None else attn_bias.unsqueeze(0)
    out = dense_path(q, k, v, attn_bias=bias, attn_mask=None, scale=scale, is_causal=False, dropout_p=0.0)
    out = out.reshape(B, interval, interval, heads, gh, gw, out.shape[-1]).permute(0, 3, 4, 1, 5, 2, 6)
    return out.reshape(B, heads, H, W, out.shape[-1])


def _reference(q: Tensor, k: Tensor, v: Tensor, group: tuple[int, int], interval: int, *,
               attn_bias: Tensor | None, scale: float) -> Tensor:
    return _as_windows(window._reference, dense._reference, q, k, v, group, interval, attn_bias, scale)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, group: tuple[int, int], interval: int, *,
          attn_bias: Tensor | None, scale: float) -> Tensor:
    return _as_windows(window._sdpa, dense._sdpa, q, k, v, group, interval, attn_bias, scale)


def _xformers(q: Tensor, k: Tensor, v: Tensor, group: tuple[int, int], interval: int, *,
              attn_bias: Tensor | None, scale: float) -> Tensor:
    return _as_windows(window._xformers, dense._xformers, q, k, v, group, interval, attn_bias, scale)


def _natten(q: Tensor, k: Tensor, v: Tensor, group: tuple[int, int], interval: int, *,
            attn_bias: Tensor | None, scale: float) -> Tensor:
    return window.natten_blocked(_OP, q, k, v, group, interval, scale)


def _natten_can_run(q: Tensor, k: Tensor, v: Tensor, group: tuple[int, int], interval: int, *,
                    attn_bias: Tensor | None, scale: float) -> str | None:
    refusal = window.natten_refusal(q, k, v, attn_bias)
    if refusal is not None:
        return refusal
    if any(_padding(q.shape, group, interval)) or is_tracing():
        return (f'needs a map that is a multiple of the block {group[0] * interval} x {group[1] * interval} '
                f'(got {q.shape[2]} x {q.shape[3]}): a partial block needs a padding mask, a bias NATTEN '
                'cannot apply')
    return None


PATTERN = Pattern(
    _OP,
    {'reference': _reference, 'sdpa': _sdpa, 'natten': _natten, 'xformers': _xformers},
    default='sdpa',
    can_run={'natten': _natten_can_run},
    limits={'natten': window.NATTEN_LIMITS + '; a map that is a multiple of the block (no padding mask)'},
)


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
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default), ``'natten'`` (no
            ``attn_bias``, a map that is a multiple of the block; forward only on CPU) or
            ``'xformers'`` (CUDA only).

    Returns:
        (B, heads, H, W, dv).
    """
    group = _pair(group_size, 'group_size')
    (interval, _) = _pair(interval, 'interval')
    check_qkv(_OP, q, k, v, '(B, heads, H, W, head_dim)', shared=4)
    attn_bias = check_float_bias(_OP, 'attn_bias', attn_bias, q)
    if attn_bias is not None:
        n = group[0] * group[1]
        check_broadcast(_OP, 'attn_bias', attn_bias, (q.shape[1], n, n), '(heads, N, N)')
    return PATTERN(backend, q.device, q, k, v, group, interval, attn_bias=attn_bias,
                   scale=resolve_scale(_OP, scale, q))


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

"""Plain PyTorch reference implementations of the attention ops: the ground truth.

Each op is written the obvious way: build the logits explicitly, add the bias, mask, softmax,
multiply by the values. They favour clarity over speed and memory (the neighbourhood op
gathers k*k keys per query, the routed op gathers the selected regions) and are what every
other backend is tested against. Inputs are validated by the public ops in
``zoo.attention``, which also turn ``scale=None`` into ``head_dim ** -0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attend(logits: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Softmax the logits over the last dim (in at least float32) and average the values with them.

    A query whose logits are all -inf (every key masked) outputs zeros, as SDPA does.

    Args:
        logits: (..., Nq, Nk) attention logits, -inf where a key is masked out.
        v: (..., Nk, dv) values.
        dropout_p: Dropout probability on the attention weights.

    Returns:
        (..., Nq, dv).
    """
    blocked = torch.isneginf(logits).all(dim=-1, keepdim=True)
    # Zeroing those rows first keeps the softmax (and its gradient) free of 0/0.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    weights = torch.softmax(logits.masked_fill(blocked, 0.0), dim=-1, dtype=dtype).masked_fill(blocked, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights.to(v.dtype) @ v


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_bias: Tensor | None,
    attn_mask: Tensor | None,
    scale: float,
    is_causal: bool,
    dropout_p: float,
) -> Tensor:
    """Dense attention on (B, heads, N, d) tensors; see ``zoo.attention.dense_attention``."""
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


def partition_windows(x: Tensor, window: tuple[int, int]) -> Tensor:
    """(B, heads, H, W, c) -> (B, heads, nW, wh*ww, c), windows and their tokens row-major."""
    B, h, H, W, c = x.shape
    wh, ww = window
    x = x.reshape(B, h, H // wh, wh, W // ww, ww, c).transpose(3, 4)
    return x.reshape(B, h, (H // wh) * (W // ww), wh * ww, c)


def merge_windows(x: Tensor, size: tuple[int, int], window: tuple[int, int]) -> Tensor:
    """Inverse of :func:`partition_windows`: (B, heads, nW, wh*ww, c) -> (B, heads, H, W, c)."""
    B, h, _, _, c = x.shape
    (H, W), (wh, ww) = size, window
    x = x.reshape(B, h, H // wh, W // ww, wh, ww, c).transpose(3, 4)
    return x.reshape(B, h, H, W, c)


def window_bias(attn_bias: Tensor) -> Tensor:
    """Bring a (heads, N, N) or (nW, heads, N, N) window bias to (heads, nW, N, N) order."""
    return attn_bias.unsqueeze(1) if attn_bias.dim() == 3 else attn_bias.transpose(0, 1)


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_size: tuple[int, int],
    *,
    attn_bias: Tensor | None,
    scale: float,
) -> Tensor:
    """Window attention on (B, heads, H, W, d) tensors; see ``zoo.attention.window_attention``."""
    qw, kw, vw = (partition_windows(t, window_size) for t in (q, k, v))
    logits = (qw @ kw.transpose(-2, -1)) * scale  # (B, heads, nW, N, N)
    if attn_bias is not None:
        logits = logits + window_bias(attn_bias)
    return merge_windows(attend(logits, vw), q.shape[2:4], window_size)


def neighbourhood(
    length: int, kernel_size: int, dilation: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The neighbourhood of every position of a 1-D axis, as NATTEN defines it.

    With dilation d, the positions sharing a query's residue modulo d form a sub-axis; on it
    the window of ``kernel_size`` positions is centred on the query, then shifted inwards
    (not shrunk) where it would cross the border.

    Args:
        length: Size of the axis, at least ``kernel_size * dilation``.
        kernel_size: Odd window size.
        dilation: Step between the positions of a window.
        device: Device of the returned tensors.

    Returns:
        ``keys``, (length, kernel_size): the key positions of each query position; and
        ``rel``, (length, kernel_size): for each, the index (key - query) / dilation +
        kernel_size - 1 into the relative position bias axis of size 2 * kernel_size - 1.
    """
    pos = torch.arange(length, device=device)
    residue, sub = pos % dilation, pos // dilation
    sub_length = (length - residue + dilation - 1) // dilation  # size of each query's sub-axis
    start = (sub - kernel_size // 2).clamp(min=0)
    start = torch.minimum(start, sub_length - kernel_size)
    offsets = torch.arange(kernel_size, device=device)
    sub_keys = start[:, None] + offsets  # key positions on the sub-axis
    keys = residue[:, None] + dilation * sub_keys
    rel = sub_keys - sub[:, None] + kernel_size - 1
    return keys, rel


def neighborhood_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kernel_size: int,
    *,
    dilation: int,
    rpb: Tensor | None,
    scale: float,
) -> Tensor:
    """Neighbourhood attention on (B, heads, H, W, d); see ``zoo.attention.neighborhood_attention``."""
    B, h, H, W, _ = q.shape
    rows, row_rel = neighbourhood(H, kernel_size, dilation, q.device)
    cols, col_rel = neighbourhood(W, kernel_size, dilation, q.device)
    # Index [y, x, i, j] -> the (i, j)-th key of query (y, x).
    key_rows, key_cols = rows[:, None, :, None], cols[None, :, None, :]
    k_nb = k[:, :, key_rows, key_cols]  # (B, heads, H, W, k, k, d)
    v_nb = v[:, :, key_rows, key_cols]  # (B, heads, H, W, k, k, dv)
    logits = torch.einsum('bhyxc,bhyxijc->bhyxij', q, k_nb) * scale
    if rpb is not None:
        logits = logits + rpb[:, row_rel[:, None, :, None], col_rel[None, :, None, :]]
    n = kernel_size * kernel_size
    out = attend(logits.reshape(B, h, H, W, 1, n), v_nb.reshape(B, h, H, W, n, v_nb.shape[-1]))
    return out.squeeze(-2)


def gather_regions(x: Tensor, region_index: Tensor) -> Tensor:
    """Concatenate, for every query region, the tokens of its selected key regions.

    Args:
        x: (B, heads, R, N, c) tokens grouped by region.
        region_index: (B, R, topk) int64 region indices.

    Returns:
        (B, heads, R, topk * N, c): for region r, regions region_index[b, r, 0..topk-1] in order.
    """
    B, h, R, N, c = x.shape
    topk = region_index.shape[-1]
    index = region_index.reshape(B, 1, R * topk, 1, 1).expand(B, h, R * topk, N, c)
    return torch.gather(x, 2, index).reshape(B, h, R, topk * N, c)


def routed_attention(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Routed attention on region-grouped tokens; see ``zoo.attention.routed_attention``."""
    k_sel = gather_regions(k, region_index)
    v_sel = gather_regions(v, region_index)
    logits = (q @ k_sel.transpose(-2, -1)) * scale  # (B, heads, R, Nq, topk * Nk)
    return attend(logits, v_sel)


def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, q_norm: Tensor, k_norm: Tensor, eps: float,
    rank_augmentation: bool = False, scale: float | None = None,
) -> Tensor:
    """Linear attention on (B, heads, N, d) tensors; see ``zoo.attention.linear_attention``."""
    n = k.shape[-2]
    if rank_augmentation:
        # RALA: weight each key by N * softmax over keys of (mean query . key) * scale.
        q_mean = q_norm.mean(dim=-2, keepdim=True)  # (B, heads, 1, d)
        logits = (q_mean @ k_norm.transpose(-2, -1)) * scale  # (B, heads, 1, Nk)
        weights = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        weights = (weights * n).to(k.dtype).transpose(-2, -1)  # (B, heads, Nk, 1)
        k, k_norm = k * weights, k_norm * weights
    kv = (k.transpose(-2, -1) @ v) / n  # (B, heads, d, dv)
    z = 1.0 / (q_norm @ k_norm.mean(dim=-2, keepdim=True).transpose(-2, -1) + eps)  # (B, heads, Nq, 1)
    return (q @ kv) * z

"""Fast paths built on ``torch.nn.functional.scaled_dot_product_attention`` (SDPA).

Each op is reshaped into one 4-D SDPA call so that PyTorch can pick its flash, memory-efficient
or CPU-fused kernel: windows are folded into the head dim, neighbourhoods become a boolean mask
(or a float bias carrying the relative position bias), routed regions are gathered first.
Inputs are validated by the public ops in ``zoo.attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import gather_regions, merge_windows, neighbourhood, partition_windows, window_bias


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
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


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
    B, h = q.shape[:2]
    # (B, heads, nW, N, c) -> (B, heads * nW, N, c): windows ride along the heads, so a
    # per-window bias broadcasts over the batch as a (1, heads * nW, N, N) view.
    qw, kw, vw = (partition_windows(t, window_size) for t in (q, k, v))
    n_windows, n = qw.shape[2], qw.shape[3]
    qw, kw, vw = (t.reshape(B, h * n_windows, n, t.shape[-1]) for t in (qw, kw, vw))
    mask = None
    if attn_bias is not None:
        mask = window_bias(attn_bias).expand(h, n_windows, n, n).reshape(1, h * n_windows, n, n)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    return merge_windows(out.reshape(B, h, n_windows, n, -1), q.shape[2:4], window_size)


def _neighbourhood_structure(
    H: int, W: int, kernel_size: int, dilation: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The (H*W, H*W) neighbour mask and the per-axis rpb indices of every (query, key) pair."""

    def axis(length: int) -> tuple[Tensor, Tensor]:
        keys, rel = neighbourhood(length, kernel_size, dilation, device)
        is_neighbour = torch.zeros(length, length, dtype=torch.bool, device=device).scatter_(1, keys, True)
        # Non-neighbours keep index 0: a valid index whose bias the mask discards.
        rel_index = torch.zeros(length, length, dtype=torch.long, device=device).scatter_(1, keys, rel)
        return is_neighbour, rel_index

    row_ok, row_rel = axis(H)
    col_ok, col_rel = axis(W)
    allowed = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(H * W, H * W)
    return allowed, row_rel, col_rel


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
    """Neighbourhood attention as dense attention under a neighbourhood mask.

    Costs O((H*W)^2) memory for the mask (and heads * (H*W)^2 for the bias with ``rpb``), on
    top of what SDPA needs; fine for the feature maps of classification models at moderate
    resolution, NATTEN is the way for large ones.
    """
    B, h, H, W, _ = q.shape
    allowed, row_rel, col_rel = _neighbourhood_structure(H, W, kernel_size, dilation, q.device)
    if rpb is None:
        mask = allowed
    else:
        bias = rpb[:, row_rel[:, None, :, None], col_rel[None, :, None, :]].reshape(h, H * W, H * W)
        mask = bias.masked_fill(~allowed, float('-inf'))
    q2, k2, v2 = (t.reshape(B, h, H * W, t.shape[-1]) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask, scale=scale)
    return out.reshape(B, h, H, W, -1)


def routed_attention(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Routed attention: gather the selected kv regions, then one SDPA call over all regions."""
    B, h, R, n_q, _ = q.shape
    k_sel = gather_regions(k, region_index)  # (B, heads, R, topk * Nk, d)
    v_sel = gather_regions(v, region_index)
    out = F.scaled_dot_product_attention(
        q.reshape(B, h * R, n_q, q.shape[-1]),
        k_sel.reshape(B, h * R, k_sel.shape[3], k_sel.shape[4]),
        v_sel.reshape(B, h * R, v_sel.shape[3], v_sel.shape[4]),
        scale=scale,
    )
    return out.reshape(B, h, R, n_q, -1)

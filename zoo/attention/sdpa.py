"""Fast paths built on ``torch.nn.functional.scaled_dot_product_attention`` (SDPA).

Each op is reshaped into one 4-D SDPA call so that PyTorch can pick its flash, memory-efficient
or CPU-fused kernel: windows are folded into the head dim, neighbourhoods become a boolean mask
(or a float bias carrying the relative position bias), routed regions are gathered per block
of query regions.
Inputs are validated by the public ops in ``zoo.attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.tracing import is_capturing

from .reference import merge_windows, neighbourhood, partition_windows, window_bias


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
    while mask is not None and mask.ndim < q.ndim:
        # Same broadcast, but SDPA's fused CPU kernel takes only masks of q's rank: a lower-rank
        # one would silently send it down the slow math path.
        mask = mask.unsqueeze(0)
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


# Keys/values gathered at once by the routed op: at most this many bytes, or the size of k and v
# themselves if that is larger. Beyond it the query regions are processed in blocks.
ROUTED_GATHER_BYTES = 64 * 2 ** 20


def _routed_block(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float) -> Tensor:
    """Routed attention of the query regions in ``q`` (those of ``region_index``) in one SDPA call.

    Args:
        q: (B, heads, r, Nq, d), a block of r query regions.
        k: (B, heads, R, Nk, d), all key regions.
        v: (B, heads, R, Nk, dv).
        region_index: (B, r, topk), the key regions of the r query regions.
    """
    B, h, r, n_q, _ = q.shape
    n_k, topk = k.shape[3], region_index.shape[2]

    def gather(x: Tensor) -> Tensor:  # (B, heads, r * topk, Nk, c) -> one row per query region
        index = region_index.reshape(B, 1, r * topk, 1, 1).expand(B, h, r * topk, n_k, x.shape[-1])
        return torch.gather(x, 2, index).reshape(B * h * r, 1, topk * n_k, x.shape[-1])

    out = F.scaled_dot_product_attention(
        q.reshape(B * h * r, 1, n_q, q.shape[-1]), gather(k), gather(v), scale=scale)
    return out.reshape(B, h, r, n_q, -1)


def _region_block(q: Tensor, k: Tensor, v: Tensor, topk: int) -> int:
    """How many query regions to gather keys/values for at once (all of them while tracing)."""
    R = q.shape[2]
    if is_capturing() or q.device.type == 'meta':
        return R
    B, h, _, n_k, _ = k.shape
    per_region = B * h * topk * n_k * (k.shape[-1] + v.shape[-1]) * k.element_size()
    budget = max(ROUTED_GATHER_BYTES, (k.numel() + v.numel()) * k.element_size())
    return max(1, min(R, budget // max(per_region, 1)))


def _routed_blocks(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float, block: int) -> Tensor:
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for start in range(0, q.shape[2], block):
        end = start + block
        out[:, :, start:end] = _routed_block(q[:, :, start:end], k, v, region_index[:, start:end], scale)
    return out


class _BlockedRoutedAttention(torch.autograd.Function):
    """Routed attention over blocks of query regions, forward and backward.

    Only one block's gathered keys/values exist at a time: the backward recomputes each block's
    gather and attention instead of keeping them from the forward.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float, block: int) -> Tensor:
        ctx.save_for_backward(q, k, v, region_index)
        ctx.scale, ctx.block = scale, block
        return _routed_blocks(q, k, v, region_index, scale, block)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, region_index = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_q = torch.empty_like(q) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_v = torch.zeros_like(v) if need_v else None
        k_leaf, v_leaf = k.detach().requires_grad_(need_k), v.detach().requires_grad_(need_v)
        for start in range(0, q.shape[2], ctx.block):
            end = start + ctx.block
            q_leaf = q[:, :, start:end].detach().requires_grad_(need_q)
            with torch.enable_grad():
                out = _routed_block(q_leaf, k_leaf, v_leaf, region_index[:, start:end], ctx.scale)
            inputs = [t for t in (q_leaf, k_leaf, v_leaf) if t.requires_grad]
            grads = iter(torch.autograd.grad(out, inputs, grad_out[:, :, start:end]))
            if need_q:
                grad_q[:, :, start:end] = next(grads)
            if need_k:
                grad_k += next(grads)
            if need_v:
                grad_v += next(grads)
        return grad_q, grad_k, grad_v, None, None, None


def routed_attention(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Routed attention: per block of query regions, gather the selected kv regions, one SDPA call.

    The gathered keys/values hold ``topk`` copies of the selected regions per query region; the
    blocks keep them within ``max(ROUTED_GATHER_BYTES, size of k and v)`` in the forward and
    in the backward (which recomputes each block), instead of ``topk`` times k and v for the
    whole map at once. While tracing or compiling there is one block (a graph without loops).
    """
    block = _region_block(q, k, v, region_index.shape[2])
    if block >= q.shape[2]:
        return _routed_block(q, k, v, region_index, scale)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _BlockedRoutedAttention.apply(q, k, v, region_index, scale, block)
    return _routed_blocks(q, k, v, region_index, scale, block)

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
    return merge_windows(out.reshape(B, h, n_windows, n, out.shape[-1]), q.shape[2:4], window_size)


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
    return out.reshape(B, h, H, W, out.shape[-1])


# Keys/values gathered at once by the routed op: at most this many bytes, or the size of k and v
# themselves if that is larger. Beyond it the query regions are processed in blocks.
ROUTED_GATHER_BYTES = 64 * 2 ** 20
# When every query region selects at least this share of all regions, the routed op attends to
# the whole map under a region mask instead (if the (B, N, N) mask fits in ROUTED_GATHER_BYTES): one
# dense SDPA call computes the masked logits too, but gathers nothing and runs at a much higher
# GFLOP/s than many tiny per-region calls. BiFormer's stage 3 at 224x224 (16 of 49 regions of
# 4 tokens, batch 32, one thread) took 33 ms per layer this way against 46 ms gathered.
ROUTED_DENSE_SHARE = 0.25


def _region_rows(x: Tensor) -> Tensor:
    """(B, heads, R, N, c) -> (B * R, N, heads, c): one row per region, all heads in it.

    A view when ``x`` is region-major in memory (a permuted view of (B, R, N, heads * c), as
    BiFormer passes it); otherwise one copy.
    """
    B, h, R, N, c = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(B * R, N, h, c)


def _routed_rows(q: Tensor, k: Tensor, v: Tensor, key_rows: Tensor, scale: float) -> Tensor:
    """Routed attention of a block of query regions (rows) in one SDPA call.

    Args:
        q: (r, Nq, heads, d), the block's query regions.
        k: (B * R, Nk, heads, d), all key regions.
        v: (B * R, Nk, heads, dv).
        key_rows: (r, topk), the rows of k/v each query region attends to.

    Returns:
        (r, Nq, heads, dv).
    """
    r, topk = key_rows.shape

    def gather(x: Tensor) -> Tensor:  # (r, heads, topk * Nk, c)
        # index_select copies whole regions (all heads at once); torch.gather with an expanded
        # index computes an offset per element and ran 5-7x slower on CPU.
        rows = x.index_select(0, key_rows.reshape(-1))
        return rows.reshape(r, topk * x.shape[1], x.shape[2], x.shape[3]).transpose(1, 2)

    out = F.scaled_dot_product_attention(q.transpose(1, 2), gather(k), gather(v), scale=scale)
    return out.transpose(1, 2)


def _key_rows(region_index: Tensor) -> Tensor:
    """(B, R, topk) region indices -> (B * R, topk) rows of the (B * R)-row key/value tensors."""
    B, R, topk = region_index.shape
    offsets = torch.arange(B, device=region_index.device).mul_(R).reshape(B, 1, 1)
    return (region_index + offsets).reshape(B * R, topk)


def _rows_per_block(k: Tensor, v: Tensor, topk: int) -> int:
    """How many query regions (rows) to gather keys/values for at once (all while tracing)."""
    B, h, R, n_k, _ = k.shape
    if is_capturing() or k.device.type == 'meta':
        return B * R
    per_row = h * topk * n_k * (k.shape[-1] + v.shape[-1]) * k.element_size()
    budget = max(ROUTED_GATHER_BYTES, (k.numel() + v.numel()) * k.element_size())
    return max(1, min(B * R, budget // max(per_row, 1)))


def _routed_blocks(q: Tensor, k: Tensor, v: Tensor, key_rows: Tensor, scale: float, block: int) -> Tensor:
    """Row tensors in (see ``_routed_rows``), (B * R, Nq, heads, dv) out, ``block`` rows at a time."""
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for start in range(0, q.shape[0], block):
        end = start + block
        out[start:end] = _routed_rows(q[start:end], k, v, key_rows[start:end], scale)
    return out


class _BlockedRoutedAttention(torch.autograd.Function):
    """Routed attention over blocks of query regions (row tensors), forward and backward.

    Only one block's gathered keys/values exist at a time: the backward recomputes each block's
    gather and attention instead of keeping them from the forward.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, key_rows: Tensor, scale: float, block: int) -> Tensor:
        ctx.save_for_backward(q, k, v, key_rows)
        ctx.scale, ctx.block = scale, block
        return _routed_blocks(q, k, v, key_rows, scale, block)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, key_rows = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_q = torch.empty(q.shape, dtype=q.dtype, device=q.device) if need_q else None
        grad_k = torch.zeros(k.shape, dtype=k.dtype, device=k.device) if need_k else None
        grad_v = torch.zeros(v.shape, dtype=v.dtype, device=v.device) if need_v else None
        k_leaf, v_leaf = k.detach().requires_grad_(need_k), v.detach().requires_grad_(need_v)
        for start in range(0, q.shape[0], ctx.block):
            end = start + ctx.block
            q_leaf = q[start:end].detach().requires_grad_(need_q)
            with torch.enable_grad():
                out = _routed_rows(q_leaf, k_leaf, v_leaf, key_rows[start:end], ctx.scale)
            inputs = [t for t in (q_leaf, k_leaf, v_leaf) if t.requires_grad]
            grads = iter(torch.autograd.grad(out, inputs, grad_out[start:end]))
            if need_q:
                grad_q[start:end] = next(grads)
            if need_k:
                grad_k += next(grads)
            if need_v:
                grad_v += next(grads)
        return grad_q, grad_k, grad_v, None, None, None


def _routed_masked(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float) -> Tensor:
    """Routed attention as one dense SDPA call over each image's whole map, with a region mask.

    Keys outside the selected regions get no weight, and the order of the selected regions does
    not matter to a softmax, so this equals the gathered form. Rows in, rows out, as
    ``_routed_rows``; q, k and v are (B * R, N, heads, c).
    """
    B, R, _ = region_index.shape
    (_, n_q, h, _), n_k = q.shape, k.shape[1]
    regions = torch.arange(R, device=q.device)
    selected = (region_index[..., None] == regions).any(dim=2)  # (B, R query regions, R key regions)
    # An additive float mask: SDPA would turn a boolean one into this anyway, a second copy.
    bias = torch.zeros(selected.shape, dtype=q.dtype, device=q.device).masked_fill(~selected, float('-inf'))
    mask = bias[:, :, None, :, None].expand(B, R, n_q, R, n_k).reshape(B, 1, R * n_q, R * n_k)

    def per_image(x: Tensor) -> Tensor:  # (B * R, N, heads, c) -> (B, heads, R * N, c)
        return x.reshape(B, R * x.shape[1], h, x.shape[-1]).transpose(1, 2)

    out = F.scaled_dot_product_attention(per_image(q), per_image(k), per_image(v), attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(B * R, n_q, h, out.shape[-1])


def _use_mask(q: Tensor, k: Tensor, topk: int) -> bool:
    """Whether the masked dense form is the cheaper one (see ``ROUTED_DENSE_SHARE``)."""
    B, _, R, n_q, _ = q.shape
    if topk < ROUTED_DENSE_SHARE * R:
        return False
    # A captured graph serves every batch and size: the share (fixed by the model) decides alone.
    return is_capturing() or B * R * n_q * R * k.shape[3] * q.element_size() <= ROUTED_GATHER_BYTES


def routed_attention(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Routed attention: per block of query regions, gather the selected kv regions, one SDPA call.

    Regions are handled as rows of (B * R, N, heads, c) tensors, so the gather copies whole
    regions; inputs that are region-major in memory (permuted views of (B, R, N, heads * c))
    need no copy of their own, and the output is such a view as well.
    The gathered keys/values hold ``topk`` copies of the selected regions per query region; the
    blocks keep them within ``max(ROUTED_GATHER_BYTES, size of k and v)`` in the forward and
    in the backward (which recomputes each block), instead of ``topk`` times k and v for the
    whole map at once. While tracing or compiling there is one block (a graph without loops).
    Dense routing (``ROUTED_DENSE_SHARE``) takes one masked SDPA call over the map instead.
    """
    B, h, R, n_q, _ = q.shape
    topk = region_index.shape[2]
    q_rows, k_rows, v_rows = _region_rows(q), _region_rows(k), _region_rows(v)
    if _use_mask(q, k, topk):
        out = _routed_masked(q_rows, k_rows, v_rows, region_index, scale)
    else:
        key_rows, block = _key_rows(region_index), _rows_per_block(k, v, topk)
        if block >= B * R:
            out = _routed_rows(q_rows, k_rows, v_rows, key_rows, scale)
        elif torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            out = _BlockedRoutedAttention.apply(q_rows, k_rows, v_rows, key_rows, scale, block)
        else:
            out = _routed_blocks(q_rows, k_rows, v_rows, key_rows, scale, block)
    return out.reshape(B, R, n_q, h, out.shape[-1]).permute(0, 3, 1, 2, 4)

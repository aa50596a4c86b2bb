"""BiFormer's bi-level routing attention: each query region attends to the tokens of its
``topk`` selected key regions.

Paths:

- ``'reference'`` (alias ``'math'``): the selected key/value regions gathered for every
  query region, logits built explicitly; the ground truth.
- ``'sdpa'`` (default): per block of query regions, the selected regions gathered as whole rows
  and one ``F.scaled_dot_product_attention`` call; when every query region selects a large
  share of all regions, one dense call over the map under a region mask instead (see
  :func:`_sdpa`).
- ``'triton'``: our kernel (``zoo/attention/triton_kernels.py``), which reads the selected
  regions in place through ``region_index`` (forward and backward), on CUDA or, with
  ``TRITON_INTERPRET=1``, in Triton's CPU interpreter. Importing this module does not import
  triton: the kernel module is imported on the first call of that path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.tracing import is_capturing

from ._backends import Pattern
from ._checks import INDEX_DTYPES, check_qkv, describe, resolve_scale
from ._math import attend

__all__ = ['routed_attention']

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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


def _reference(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    k_sel = gather_regions(k, region_index)
    v_sel = gather_regions(v, region_index)
    logits = (q @ k_sel.transpose(-2, -1)) * scale  # (B, heads, R, Nq, topk * Nk)
    return attend(logits, v_sel)


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


def _sdpa(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Per block of query regions, gather the selected kv regions, one SDPA call.

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


def _triton(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    from . import triton_kernels  # imports triton (compiled, or interpreted under TRITON_INTERPRET=1)

    return triton_kernels.routed_attention(q, k, v, region_index, scale=scale)


def _triton_can_run(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> str | None:
    if q.dtype not in _TRITON_DTYPES:
        return f"kernel takes float32, float16 and bfloat16, not {q.dtype}; use backend 'sdpa' or 'reference'"
    return None


PATTERN = Pattern(
    'routed_attention',
    {'reference': _reference, 'sdpa': _sdpa, 'triton': _triton},
    default='sdpa',
    can_run={'triton': _triton_can_run},
    limits={'triton': 'float32, float16 and bfloat16 only'},
)


def routed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    region_index: Tensor,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """BiFormer's bi-level routing attention over gathered regions.

    Query region r of image b attends, with one softmax, to the concatenated tokens of the key
    regions ``region_index[b, r, 0], ..., region_index[b, r, topk - 1]``, in that order.

    Args:
        q: Queries grouped by region, (B, heads, R, Nq, head_dim).
        k: Keys grouped by region, (B, heads, R, Nk, head_dim).
        v: Values grouped by region, (B, heads, R, Nk, dv).
        region_index: (B, R, topk) integer indices in [0, R) of the key regions of each query
            region; converted to int64. Its range is checked on CPU only: reading the
            values on the host would synchronise a GPU on every call.
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default) or ``'triton'`` (CUDA, or
            CPU with ``TRITON_INTERPRET=1``).

    Returns:
        (B, heads, R, Nq, dv).
    """
    op = 'routed_attention'
    check_qkv(op, q, k, v, '(B, heads, R, N, head_dim)', shared=3)
    B, R = q.shape[0], q.shape[2]
    if not isinstance(region_index, Tensor) or region_index.dtype not in INDEX_DTYPES:
        raise TypeError(f'{op}: region_index must be an integer tensor, got {describe(region_index)}')
    if region_index.dim() != 3 or tuple(region_index.shape[:2]) != (B, R) or region_index.shape[2] < 1:
        raise ValueError(
            f'{op}: region_index must be (B, R, topk) = ({B}, {R}, topk >= 1), '
            f'got {tuple(region_index.shape)}'
        )
    if region_index.device != q.device:
        raise ValueError(f'{op}: region_index is on {region_index.device} but q is on {q.device}')
    region_index = region_index.long()
    # Read the values only where that is free: on CPU (not on a GPU, where it would sync, nor
    # on the meta device, which has none), in eager mode, and when there are any (batch 0).
    if region_index.device.type == 'cpu' and not torch.compiler.is_compiling() and region_index.numel():
        low, high = int(region_index.min()), int(region_index.max())
        if low < 0 or high >= R:
            raise ValueError(f'{op}: region_index values must be in [0, R) = [0, {R}), got [{low}, {high}]')
    return PATTERN(backend, q.device, q, k, v, region_index, scale=resolve_scale(op, scale, q))

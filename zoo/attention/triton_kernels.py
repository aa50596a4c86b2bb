"""Our Triton kernel: BiFormer's routed attention without gathering the selected regions.

The SDPA and reference paths first copy, for every query region, the topk selected key/value
regions into a (B, heads, R, topk * Nk, d) tensor. The kernel here instead reads each selected
region in place through ``region_index`` and folds it into a flash-attention style online
softmax, so the gathered k/v never exist in memory.

This module imports triton at import time; ``zoo.attention`` imports it only when the
``'triton'`` backend is used. Triton fixes whether a kernel is compiled or interpreted when
the kernel is defined, i.e. on this module's import: set ``TRITON_INTERPRET=1`` before the first
triton call to run it on CPU tensors in Triton's interpreter (slow; for tests). The kernel
avoids Triton's standard-library helpers (``tl.max``, ``tl.sum``, ``tl.zeros``), which are
defined when triton itself is imported and so could be in the other mode.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from . import sdpa
from ._dispatch import BackendNotSupported

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _sum_combine(a, b):
    return a + b


@triton.jit
def _routed_attention_fwd(
    Q, K, V, IDX, Out, scale,
    stride_qb, stride_qh, stride_qr, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kr, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vr, stride_vn, stride_vd,
    stride_ib, stride_ir, stride_it,
    stride_ob, stride_oh, stride_or, stride_on, stride_od,
    HEADS, REGIONS, N_Q, N_K, TOPK, HEAD_DIM, V_DIM,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # One program: BLOCK_M queries of one (batch, head, query region).
    bhr = tl.program_id(0).to(tl.int64)  # int64 so that the base offsets cannot overflow
    region = bhr % REGIONS
    head = (bhr // REGIONS) % HEADS
    batch = bhr // (REGIONS * HEADS)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)

    q_ptrs = Q + batch * stride_qb + head * stride_qh + region * stride_qr \
        + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < N_Q) & (offs_d[None, :] < HEAD_DIM), other=0.0)

    # Online softmax state: running max, running sum of exp, unnormalised output.
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_DV], 0.0, tl.float32)
    for t in range(TOPK):
        kv_region = tl.load(IDX + batch * stride_ib + region * stride_ir + t * stride_it)
        k_base = K + batch * stride_kb + head * stride_kh + kv_region * stride_kr
        v_base = V + batch * stride_vb + head * stride_vh + kv_region * stride_vr
        for start_n in range(0, N_K, BLOCK_N):
            n = start_n + offs_n
            k_t = tl.load(  # keys transposed: (BLOCK_D, BLOCK_N)
                k_base + n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                mask=(n[None, :] < N_K) & (offs_d[:, None] < HEAD_DIM), other=0.0,
            )
            s = tl.dot(q, k_t, input_precision=PRECISION) * scale
            s = tl.where(n[None, :] < N_K, s, float('-inf'))
            m_new = tl.maximum(m_i, tl.reduce(s, 1, _max_combine))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)  # rescales what was accumulated under the old max
            l_i = l_i * alpha + tl.reduce(p, 1, _sum_combine)
            v_blk = tl.load(
                v_base + n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                mask=(n[:, None] < N_K) & (offs_dv[None, :] < V_DIM), other=0.0,
            )
            acc = acc * alpha[:, None] + tl.dot(p.to(v_blk.dtype), v_blk, input_precision=PRECISION)
            m_i = m_new

    out = acc / l_i[:, None]
    o_ptrs = Out + batch * stride_ob + head * stride_oh + region * stride_or \
        + offs_m[:, None] * stride_on + offs_dv[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=(offs_m[:, None] < N_Q) & (offs_dv[None, :] < V_DIM))


# Whether this process runs the kernel in Triton's interpreter; dispatch checks it.
INTERPRETED = isinstance(_routed_attention_fwd, InterpretedFunction)


def _pow2_block(n: int) -> int:
    """The power-of-two block covering ``n``, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(n))


# Budget of one (rows x (d + dv)) tile of queries or keys/values. Compiled for sm80, the kernel
# then needs at most 58 KB of shared memory up to head_dim 128 in float32 and 256 in 16-bit
# floats (within the 64 KB of every GPU since Volta); float32 with head_dim 256 needs 83 KB.
_TILE_BYTES = 16 * 1024


def _row_block(n: int, row_bytes: int) -> int:
    """The block of rows for ``n`` rows: at most 64, halved while its tile exceeds the budget."""
    block = min(64, _pow2_block(n))
    while block > 16 and block * row_bytes > _TILE_BYTES:
        block //= 2
    return block


def routed_attention_forward(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float) -> Tensor:
    """Launch the kernel: (B, heads, R, Nq, d) queries -> (B, heads, R, Nq, dv), no autograd."""
    B, h, R, n_q, d = q.shape
    n_k, dv = k.shape[3], v.shape[4]
    out = torch.empty(B, h, R, n_q, dv, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    # Only float32 inputs care: follow torch's TF32 switch, so results match the other backends'.
    tf32 = q.is_cuda and torch.backends.cuda.matmul.allow_tf32
    block_d, block_dv = _pow2_block(d), _pow2_block(dv)
    row_bytes = q.element_size() * (block_d + block_dv)
    block_m, block_n = _row_block(n_q, row_bytes), _row_block(n_k, row_bytes)
    grid = (B * h * R, triton.cdiv(n_q, block_m))
    _routed_attention_fwd[grid](
        q, k, v, region_index, out, scale,
        *q.stride(), *k.stride(), *v.stride(), *region_index.stride(), *out.stride(),
        h, R, n_q, n_k, region_index.shape[2], d, dv,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
        PRECISION='tf32' if tf32 else 'ieee',
    )
    return out


class _RoutedAttention(torch.autograd.Function):
    """Forward by the Triton kernel; backward by recomputing the SDPA path and differentiating it.

    The backward therefore gathers the selected regions like the SDPA path does: training saves
    no memory over 'sdpa', inference does.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(q, k, v, region_index)
        ctx.scale = scale
        return routed_attention_forward(q, k, v, region_index, scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, region_index = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        inputs = [t.detach().requires_grad_(need) for t, need in zip((q, k, v), needs, strict=True)]
        with torch.enable_grad():
            out = sdpa.routed_attention(*inputs, region_index, scale=ctx.scale)
        grads = iter(torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad_out))
        return (*(next(grads) if t.requires_grad else None for t in inputs), None, None)


def routed_attention(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Routed attention by the Triton kernel; see ``zoo.attention.routed_attention``.

    Forward: the kernel, reading the selected kv regions in place. Backward: recomputed through
    the SDPA path (see :class:`_RoutedAttention`).

    Raises:
        BackendNotSupported: the dtype is not float32, float16 or bfloat16.
    """
    if q.dtype not in _DTYPES:
        raise BackendNotSupported(
            f"routed_attention: the 'triton' kernel supports float32, float16 and bfloat16, "
            f"not {q.dtype}; use backend 'sdpa' or 'reference'"
        )
    return _RoutedAttention.apply(q, k, v, region_index, scale)

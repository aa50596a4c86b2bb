"""Our Triton kernel: BiFormer's routed attention without gathering the selected regions.

The reference path copies, for every query region, the topk selected key/value regions into a
(B, heads, R, topk * Nk, d) tensor (the SDPA path does so for a block of query regions at a
time). The kernels here instead read each selected region in place through ``region_index``:
the forward folds it into a flash-attention style online softmax and saves the log-sum-exp of
each query; the backward recomputes the probabilities from it, writes dq and accumulates dk/dv
of the selected regions atomically. The gathered k/v never exist in memory.

This module imports triton at import time; ``zoo.attention.routed`` imports it only when the
``'triton'`` path runs (which checks the dtype first). Triton fixes whether a kernel is compiled or interpreted when
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



@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _sum_combine(a, b):
    return a + b


@triton.jit
def _routed_attention_fwd(
    Q, K, V, IDX, Out, LSE, scale,
    stride_qb, stride_qh, stride_qr, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kr, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vr, stride_vn, stride_vd,
    stride_ib, stride_ir, stride_it,
    stride_ob, stride_oh, stride_or, stride_on, stride_od,
    HEADS, REGIONS, N_Q, N_K, TOPK, HEAD_DIM, V_DIM,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, STORE_LSE: tl.constexpr,
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
    if STORE_LSE:  # (B * heads * R, N_Q) float32, contiguous: what the backward needs of the softmax
        tl.store(LSE + bhr * N_Q + offs_m, m_i + tl.log(l_i), mask=offs_m < N_Q)


@triton.jit
def _routed_attention_bwd(
    Q, K, V, IDX, DO, LSE, DELTA, DQ, DK, DV, scale,
    stride_qb, stride_qh, stride_qr, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kr, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vr, stride_vn, stride_vd,
    stride_ib, stride_ir, stride_it,
    stride_ob, stride_oh, stride_or, stride_on, stride_od,
    HEADS, REGIONS, N_Q, N_K, TOPK, HEAD_DIM, V_DIM,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # One program: BLOCK_M queries of one (batch, head, query region). It recomputes the
    # probabilities from the saved log-sum-exp, reading the selected key/value regions in place
    # through IDX like the forward; dq is its own, dk and dv of the selected regions are shared
    # with the other query regions that selected them and are accumulated atomically (float32
    # buffers DK and DV, laid out like K and V: contiguous (B, heads, R, N_K, d)).
    bhr = tl.program_id(0).to(tl.int64)
    region = bhr % REGIONS
    head = (bhr // REGIONS) % HEADS
    batch = bhr // (REGIONS * HEADS)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_valid = offs_m < N_Q

    q = tl.load(Q + batch * stride_qb + head * stride_qh + region * stride_qr
                + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=m_valid[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    do = tl.load(DO + batch * stride_ob + head * stride_oh + region * stride_or
                 + offs_m[:, None] * stride_on + offs_dv[None, :] * stride_od,
                 mask=m_valid[:, None] & (offs_dv[None, :] < V_DIM), other=0.0)
    lse = tl.load(LSE + bhr * N_Q + offs_m, mask=m_valid, other=0.0)
    delta = tl.load(DELTA + bhr * N_Q + offs_m, mask=m_valid, other=0.0)
    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for t in range(TOPK):
        kv_region = tl.load(IDX + batch * stride_ib + region * stride_ir + t * stride_it)
        k_base = K + batch * stride_kb + head * stride_kh + kv_region * stride_kr
        v_base = V + batch * stride_vb + head * stride_vh + kv_region * stride_vr
        dk_base = DK + ((batch * HEADS + head) * REGIONS + kv_region) * N_K * HEAD_DIM
        dv_base = DV + ((batch * HEADS + head) * REGIONS + kv_region) * N_K * V_DIM
        for start_n in range(0, N_K, BLOCK_N):
            n = start_n + offs_n
            n_valid = n < N_K
            k = tl.load(k_base + n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                        mask=n_valid[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
            v = tl.load(v_base + n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                        mask=n_valid[:, None] & (offs_dv[None, :] < V_DIM), other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            p = tl.exp(s - lse[:, None])
            p = tl.where(m_valid[:, None] & n_valid[None, :], p, 0.0)
            dv_part = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
            dk_part = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION) * scale
            tl.atomic_add(dk_base + n[:, None] * HEAD_DIM + offs_d[None, :], dk_part,
                          mask=n_valid[:, None] & (offs_d[None, :] < HEAD_DIM))
            tl.atomic_add(dv_base + n[:, None] * V_DIM + offs_dv[None, :], dv_part,
                          mask=n_valid[:, None] & (offs_dv[None, :] < V_DIM))
    tl.store(DQ + bhr * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq * scale,
             mask=m_valid[:, None] & (offs_d[None, :] < HEAD_DIM))


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


def _blocks(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int, int]:
    d, dv = q.shape[4], v.shape[4]
    block_d, block_dv = _pow2_block(d), _pow2_block(dv)
    row_bytes = q.element_size() * (block_d + block_dv)
    return _row_block(q.shape[3], row_bytes), _row_block(k.shape[3], row_bytes), block_d, block_dv


def routed_attention_forward(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float,
                             lse: Tensor | None = None) -> Tensor:
    """Launch the kernel: (B, heads, R, Nq, d) queries -> (B, heads, R, Nq, dv), no autograd.

    Args:
        lse: optional contiguous float32 (B, heads, R, Nq) tensor that receives the log-sum-exp
            of each query's logits (what the backward kernel needs).
    """
    B, h, R, n_q, d = q.shape
    n_k, dv = k.shape[3], v.shape[4]
    out = torch.empty(B, h, R, n_q, dv, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    # Only float32 inputs care: follow torch's TF32 switch, so results match the other backends'.
    tf32 = q.is_cuda and torch.backends.cuda.matmul.allow_tf32
    block_m, block_n, block_d, block_dv = _blocks(q, k, v)
    grid = (B * h * R, triton.cdiv(n_q, block_m))
    _routed_attention_fwd[grid](
        q, k, v, region_index, out, out if lse is None else lse, scale,
        *q.stride(), *k.stride(), *v.stride(), *region_index.stride(), *out.stride(),
        h, R, n_q, n_k, region_index.shape[2], d, dv,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
        PRECISION='tf32' if tf32 else 'ieee', STORE_LSE=lse is not None,
    )
    return out


def routed_attention_backward(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float,
                              out: Tensor, lse: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the backward kernel: the gradients of q, k and v (in their dtypes), no autograd."""
    B, h, R, n_q, d = q.shape
    n_k, dv = k.shape[3], v.shape[4]
    grad_out = grad_out.contiguous()
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()  # (B, heads, R, Nq)
    grad_q = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    grad_k = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
    grad_v = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
    if grad_q.numel() and grad_k.numel():
        tf32 = q.is_cuda and torch.backends.cuda.matmul.allow_tf32
        block_m, block_n, block_d, block_dv = _blocks(q, k, v)
        grid = (B * h * R, triton.cdiv(n_q, block_m))
        _routed_attention_bwd[grid](
            q, k, v, region_index, grad_out, lse, delta, grad_q, grad_k, grad_v, scale,
            *q.stride(), *k.stride(), *v.stride(), *region_index.stride(), *grad_out.stride(),
            h, R, n_q, n_k, region_index.shape[2], d, dv,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
            PRECISION='tf32' if tf32 else 'ieee',
        )
    return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype)


class _RoutedAttention(torch.autograd.Function):
    """Forward and backward by the Triton kernels, both reading the selected regions by index.

    The forward saves the log-sum-exp of each query row; the backward recomputes the attention
    probabilities block by block from it (flash-attention style), so neither pass materialises
    the gathered keys/values or the attention matrix.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, scale: float) -> Tensor:
        lse = torch.empty(q.shape[:4], dtype=torch.float32, device=q.device)
        out = routed_attention_forward(q, k, v, region_index, scale, lse=lse)
        ctx.save_for_backward(q, k, v, region_index, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, region_index, out, lse = ctx.saved_tensors
        grad_q, grad_k, grad_v = routed_attention_backward(q, k, v, region_index, ctx.scale, out, lse, grad_out)
        needs = ctx.needs_input_grad
        return (grad_q if needs[0] else None, grad_k if needs[1] else None, grad_v if needs[2] else None,
                None, None)


def routed_attention(q: Tensor, k: Tensor, v: Tensor, region_index: Tensor, *, scale: float) -> Tensor:
    """Routed attention by the Triton kernel; see ``zoo.attention.routed_attention``.

    Forward and backward: kernels reading the selected kv regions in place (see
    :class:`_RoutedAttention`).
    """
    return _RoutedAttention.apply(q, k, v, region_index, scale)

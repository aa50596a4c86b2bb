"""Causal attention with the mask applied AFTER the softmax (iLLaMA's), exact and without N x N.

iLLaMA (and LLaMA-style vision models trained with its "soft mask") compute

    out = (softmax(q k^T * scale) * mask) @ v,    mask = r + (1 - r) * tril(ones(N, N))

with no renormalisation of the rows. At ``r = 0`` (inference) this is NOT causal attention
(``is_causal=True`` renormalises over the allowed keys): row ``i`` of the masked softmax
equals the causal softmax row scaled by the share of the full softmax mass that falls on
keys ``j <= i``, which is ``exp(lse_causal_i - lse_full_i)``, ``lse`` being the log-sum-exp
of the row's logits. So

    out = exp(lse_causal - lse_full)[..., None] * causal_attention(q, k, v)

and, for the soft mask, ``out = r * full_attention(q, k, v) + (1 - r) * <the above>``.

Paths (chosen by the rule of every op of ``zoo.attention``, see ``zoo.attention._backends``: ``backend=``, then
:func:`zoo.attention.use_backend`, then ``$ZOO_ATTENTION_BACKEND``, else ``'sdpa'``):

- ``'reference'`` (alias ``'math'``): the official formula, materialising the N x N weights.
- ``'sdpa'``: for short sequences (weights of at most ``_MATERIALISE_BYTES``, 32 MiB) the
  plain formula, which is faster there, with a backward that keeps only the softmax (the
  masked weights are remade from it, so training holds one N x N tensor per call, not two);
  otherwise, on CPU in eager mode, PyTorch's fused
  flash kernel for CPU
  (``aten._scaled_dot_product_flash_attention_for_cpu``, which also returns the log-sum-exp)
  for a causal and a full pass, and a hand-written backward built from the same kernel's
  backward (no N x N tensor in either direction). On other devices (or a v head dim different
  from q's) the log-sum-exps come from logits computed in query blocks of ``_BLOCK`` rows
  (exact; autograd keeps the blocks for the backward) and the causal output from
  ``F.scaled_dot_product_attention``. While tracing, exporting to ONNX or compiling, the plain
  formula is used (the fused CPU kernel does not export; the compiler fuses the formula).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._backends import Pattern
from ._checks import check_float_bias, check_qkv, positive_int, resolve_scale
from zoo.layers.tracing import is_capturing

__all__ = ['causal_post_softmax_attention', 'soft_causal_mask']

_OP = 'causal_post_softmax_attention'
_BLOCK = 1024  # query rows per block of logits in the portable sdpa path
# Below this size of the (B, heads, N, N) weights the 'sdpa' backend materialises them: the
# fused kernel's two passes cost more than they save for short sequences (e.g. 197 tokens at
# 224x224: 1 ms materialised vs 26 ms fused for one image, measured on CPU).
_MATERIALISE_BYTES = 32 * 2 ** 20


def soft_causal_mask(n: int, soft_rate: float = 0.0, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """The official multiplicative mask ``r + (1 - r) * tril(ones(n, n))``, shape (n, n)."""
    causal = torch.ones(n, n, device=device, dtype=dtype).tril()
    return soft_rate + (1.0 - soft_rate) * causal


# --- backends -------------------------------------------------------------------------------


def _post_mask(weights: Tensor, soft_rate: float, inplace: bool = False) -> Tensor:
    """``weights * (r + (1 - r) * tril(ones))`` without the (N, N) mask (tril's backward saves
    nothing, where a product with a mask made per call keeps one mask per block for autograd).
    An elementwise product with a constant, so it is also its own backward. ``inplace``
    overwrites ``weights`` when ``r = 0`` (a temporary of the backward)."""
    if not soft_rate:
        return weights.tril_() if inplace else weights.tril()
    return soft_rate * weights + (1.0 - soft_rate) * weights.tril()


def _reference(q: Tensor, k: Tensor, v: Tensor, scale: float, soft_rate: float) -> Tensor:
    dtype = torch.promote_types(q.dtype, torch.float32)
    weights = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1, dtype=dtype)
    return _post_mask(weights, soft_rate).to(v.dtype) @ v


class _PostMaskMaterialised(torch.autograd.Function):
    """The reference formula with one (N, N) tensor kept for the backward instead of two.

    Autograd of the formula keeps the softmax ``P`` (for its own backward) and the masked
    weights ``M`` (for the product with v). ``M`` is remade from ``P`` in the backward (one
    elementwise pass), so a training step holds half the attention weights. Called with
    autocast off and operands already in the dtype autocast gives a matmul (see ``_materialised``).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, soft_rate: float) -> Tensor:
        dtype = torch.promote_types(q.dtype, torch.float32)
        logits = (q @ k.transpose(-2, -1)).mul_(scale)
        weights = torch.softmax(logits, dim=-1, dtype=dtype)
        # a view (v of a fused qkv projection) would keep its whole base alive until the backward
        v = v.contiguous()
        ctx.save_for_backward(q, k, v, weights)
        ctx.scale, ctx.soft_rate = scale, soft_rate
        if not soft_rate and logits.dtype == weights.dtype:
            # the masked weights into the dead logits' memory: fresh (N, N) pages cost page faults
            return torch.tril(weights, out=logits).to(v.dtype) @ v
        del logits
        return _post_mask(weights, soft_rate).to(v.dtype) @ v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        q, k, v, weights = ctx.saved_tensors
        masked = _post_mask(weights, ctx.soft_rate).to(v.dtype)
        dv = masked.transpose(-2, -1) @ grad
        d_weights = _post_mask((grad @ v.transpose(-2, -1)).to(weights.dtype), ctx.soft_rate, inplace=True)
        if masked.dtype == weights.dtype and masked.is_contiguous():  # its memory is free again: reuse it
            d_logits = torch.ops.aten._softmax_backward_data.out(d_weights, weights, -1, weights.dtype,
                                                                  grad_input=masked)
        else:
            del masked
            d_logits = torch._softmax_backward_data(d_weights, weights, -1, weights.dtype)
        del d_weights
        d_logits = d_logits.to(q.dtype).mul_(ctx.scale)
        return d_logits @ k, d_logits.transpose(-2, -1) @ q, dv, None, None


def _materialised(q: Tensor, k: Tensor, v: Tensor, scale: float, soft_rate: float) -> Tensor:
    if not torch.is_grad_enabled() or not (q.requires_grad or k.requires_grad or v.requires_grad):
        return _reference(q, k, v, scale, soft_rate)
    device = q.device.type
    if torch.is_autocast_enabled(device):  # the casts autocast applies to the matmuls, in the graph
        dtype = torch.get_autocast_dtype(device)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        with torch.autocast(device, enabled=False):
            return _PostMaskMaterialised.apply(q, k, v, scale, soft_rate)
    return _PostMaskMaterialised.apply(q, k, v, scale, soft_rate)


def _flash(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)


def _flash_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    causal: bool, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, k, v, out, lse, 0.0, causal, scale=scale)


class _PostMaskFlashCPU(torch.autograd.Function):
    """``exp(lse_c - lse_f) * causal_attention`` with the CPU flash kernel, forward and backward.

    Backward, with ``P`` the full softmax, ``Pc`` the causal one, ``a = exp(lse_c - lse_f)`` and
    ``Pm = P * tril = a * Pc``: ``dV = Pm^T dO``, and the logit gradient is
    ``dS = Pm * (dO v^T) - P * D`` with ``D_i = dO_i . out_i``. The causal kernel's backward fed
    with ``a * dO`` gives ``dV`` and the part ``Pm * (dO v^T) - Pc * D`` (its own row term is
    ``a_i dO_i . causal_i = D_i``); the rest, ``(Pc - P) * D``, contributes
    ``scale * D * (Pc k - P k)`` to dQ (two forward passes with k as the values) and
    ``scale * (Pc^T (D q) - P^T (D q))`` to dK (the value gradients of two backward passes).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        causal, lse_c = _flash(q, k, v, True, scale)
        _, lse_f = _flash(q, k, v, False, scale)
        rate = torch.exp(lse_c - lse_f).unsqueeze(-1).to(causal.dtype)  # (B, h, N, 1), <= 1
        out = causal * rate
        ctx.save_for_backward(q, k, v, causal, lse_c, lse_f, rate, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, v, causal, lse_c, lse_f, rate, out = ctx.saved_tensors
        scale = ctx.scale
        grad = grad.contiguous()
        dq, dk, dv = _flash_backward(grad * rate, q, k, v, causal, lse_c, True, scale)
        d = (grad * out).sum(-1, keepdim=True)  # D_i
        dq_in = d * q
        pc_t, p_t = (_flash_backward(g, q, k, v, causal, lse, c, scale)[2]
                     for g, lse, c in ((dq_in, lse_c, True), (dq_in, lse_f, False)))
        causal_k, _ = _flash(q, k, k, True, scale)
        full_k, _ = _flash(q, k, k, False, scale)
        dq = dq + scale * d * (causal_k - full_k)
        dk = dk + scale * (pc_t - p_t)
        return dq, dk, dv, None


def _row_lse(q: Tensor, k: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Causal and full log-sum-exp of every query row, from logits computed in row blocks."""
    n = q.shape[-2]
    dtype = torch.promote_types(q.dtype, torch.float32)
    lse_c, lse_f = [], []
    for start in range(0, n, _BLOCK):
        logits = (q[..., start:start + _BLOCK, :] @ k.transpose(-2, -1)).to(dtype) * scale
        rows = torch.arange(start, start + logits.shape[-2], device=q.device)[:, None]
        later = torch.arange(n, device=q.device)[None, :] > rows
        lse_f.append(torch.logsumexp(logits, dim=-1))
        lse_c.append(torch.logsumexp(logits.masked_fill(later, float('-inf')), dim=-1))
    return torch.cat(lse_c, dim=-1), torch.cat(lse_f, dim=-1)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float, soft_rate: float) -> Tensor:
    if is_capturing():  # exported / compiled graphs: the plain formula (the fused kernels do not export)
        return _reference(q, k, v, scale, soft_rate)
    b, h, n = q.shape[:3]
    if b * h * n * n * 4 <= _MATERIALISE_BYTES:  # small: the weights fit in cache
        return _materialised(q, k, v, scale, soft_rate)
    if (q.device.type == 'cpu' and q.shape[-1] == v.shape[-1]
            and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)):
        out = _PostMaskFlashCPU.apply(q, k, v, scale)
    else:
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        lse_c, lse_f = _row_lse(q, k, scale)
        out = causal * torch.exp(lse_c - lse_f).unsqueeze(-1).to(causal.dtype)
    if soft_rate:
        full = F.scaled_dot_product_attention(q, k, v, scale=scale)
        out = soft_rate * full + (1.0 - soft_rate) * out
    return out


# --- the public op --------------------------------------------------------------------------


PATTERN = Pattern(_OP, {'reference': _reference, 'sdpa': _sdpa}, default='sdpa')


def causal_post_softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    soft_rate: float = 0.0,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """``(softmax(q k^T * scale) * (r + (1 - r) * tril)) @ v``: iLLaMA's post-softmax causal mask.

    Rows are not renormalised after masking (unlike ``is_causal=True``), as in the official
    iLLaMA code; ``soft_rate`` ``r`` is the training-time soft mask (1 = bidirectional
    attention, 0 = the causal mask used at inference).

    Args:
        q: Queries, (B, heads, N, head_dim).
        k: Keys, (B, heads, N, head_dim) (the same N: the mask is square).
        v: Values, (B, heads, N, dv).
        soft_rate: ``r`` in [0, 1].
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'`` or ``'sdpa'`` (default; see the module docstring).

    Returns:
        (B, heads, N, dv).
    """
    check_qkv(_OP, q, k, v, '(B, heads, N, head_dim)', shared=2)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f'{_OP}: q and k must have the same length N (a square mask); '
                         f'got q {tuple(q.shape)}, k {tuple(k.shape)}')
    if isinstance(soft_rate, Tensor) or not 0.0 <= soft_rate <= 1.0:
        raise ValueError(f'{_OP}: soft_rate must be a number in [0, 1], got {soft_rate!r}')
    scale = resolve_scale(_OP, scale, q)
    return PATTERN(backend, q.device, q, k, v, scale, float(soft_rate))

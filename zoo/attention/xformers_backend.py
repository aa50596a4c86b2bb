"""xFormers ``memory_efficient_attention`` path for dense attention (``pip install 'zoo[xformers]'``).

CUDA only: dispatch refuses other devices before this module runs. xFormers takes
(B, N, heads, d) tensors and one ``attn_bias``: either its ``LowerTriangularMask`` (causal,
top-left aligned like SDPA's ``is_causal``) or a dense (B, heads, Nq, Nk) float tensor, into
which the bias, the bool mask and the causal mask are merged here.
"""

from __future__ import annotations

import torch
from torch import Tensor

# xFormers' kernels read a tensor bias in rows that must start on 8-element boundaries.
_BIAS_ALIGNMENT = 8


def _merged_bias(
    q: Tensor, k: Tensor, attn_bias: Tensor | None, attn_mask: Tensor | None, is_causal: bool
) -> Tensor:
    """One (B, heads, Nq, Nk) additive bias with -inf where any mask forbids attending."""
    B, h, n_q, _ = q.shape
    n_k = k.shape[2]
    padded = -(-n_k // _BIAS_ALIGNMENT) * _BIAS_ALIGNMENT
    bias = q.new_zeros(B, h, n_q, padded)[..., :n_k]
    if attn_bias is not None:
        bias.copy_(attn_bias.expand(B, h, n_q, n_k))
    if attn_mask is not None:
        bias.masked_fill_(~attn_mask, float('-inf'))
    if is_causal:
        causal = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        bias.masked_fill_(~causal, float('-inf'))
    return bias


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
    """Dense attention through xFormers; see ``zoo.attention.dense_attention``."""
    import xformers.ops as xops

    if attn_bias is None and attn_mask is None:
        bias = xops.LowerTriangularMask() if is_causal else None
    else:
        bias = _merged_bias(q, k, attn_bias, attn_mask, is_causal)
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p, scale=scale
    )
    return out.transpose(1, 2)

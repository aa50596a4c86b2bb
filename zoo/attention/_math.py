"""Small tensor helpers shared by the pattern modules: the reference softmax-average and the
window partition of a feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.tracing import is_capturing


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


def learned_bias_on_cpu(q: Tensor, attn_bias: Tensor | None) -> bool:
    """Whether SDPA would take its math kernel only because a finite bias needs a gradient on CPU.

    PyTorch's fused CPU kernel gives no gradient for its mask, so SDPA falls back to its math
    kernel, whose safe softmax spends isneginf/all/where passes over the logits on rows with
    every key masked. A finite bias has no such row: :func:`attend_biased` then computes what the
    official CrossFormer code computes, without those passes (HaloNet's relative logits, a mask
    as large as the logits, gain nothing from it and stay on SDPA). A bias holding -inf
    stays on SDPA; so do graph captures (no data-dependent branch) and other devices.
    """
    return (attn_bias is not None and attn_bias.requires_grad and torch.is_grad_enabled()
            and q.device.type == 'cpu' and not is_capturing() and not bool(torch.isneginf(attn_bias).any()))


def attend_biased(q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor, scale: float) -> Tensor:
    """``softmax(q k^T * scale + attn_bias) v``, softmax in at least float32, for a finite bias
    (see :func:`learned_bias_on_cpu`); q, k, v (..., N, d) and the bias broadcastable to the logits."""
    logits = (q @ k.transpose(-2, -1)) * scale + attn_bias
    weights = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    return weights.to(v.dtype) @ v


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

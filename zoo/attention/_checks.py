"""Input validation shared by the attention ops: bad input gets an error that says what was
wrong and what is accepted, before any backend runs. Every check is on shapes, dtypes and
devices only (no tensor values, so no device sync)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_qkv(op: str, q: Tensor, k: Tensor, v: Tensor, layout: str, shared: int) -> None:
    """Check q, k, v against ``layout``; q must match k and v on their first ``shared`` dims."""
    rank = layout.count(',') + 1
    for name, t in (('q', q), ('k', k), ('v', v)):
        if not isinstance(t, Tensor):
            raise TypeError(f'{op}: {name} must be a torch.Tensor, got {type(t).__name__}')
        if t.dim() != rank:
            raise ValueError(f'{op}: {name} must be {rank}-D {layout}, got shape {tuple(t.shape)}')
        if not t.is_floating_point():
            raise TypeError(f'{op}: {name} must have a floating dtype, got {t.dtype}')
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f'{op}: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}')
    if not q.device == k.device == v.device:
        raise ValueError(f'{op}: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}')
    shapes = f'q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}'
    if not q.shape[:shared] == k.shape[:shared] == v.shape[:shared]:
        raise ValueError(f'{op}: q, k, v must agree on the first {shared} dims of {layout}; got {shapes}')
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f'{op}: k and v must agree on all dims but the last; got {shapes}')
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f'{op}: q and k must have the same head_dim; got {shapes}')


def check_float_bias(op: str, name: str, bias: Tensor | None, q: Tensor) -> Tensor | None:
    """Check an additive bias; cast it to q's dtype (a float32 bias under autocast is common)."""
    if bias is None:
        return None
    if not isinstance(bias, Tensor) or not bias.is_floating_point():
        raise TypeError(f'{op}: {name} must be a floating tensor (additive bias), got {describe(bias)}')
    if bias.device != q.device:
        raise ValueError(f'{op}: {name} is on {bias.device} but q is on {q.device}')
    return bias.to(q.dtype)


def check_broadcast(op: str, name: str, t: Tensor, target: tuple[int, ...], layout: str) -> None:
    try:
        ok = t.dim() <= len(target) and torch.broadcast_shapes(t.shape, target) == target
    except (RuntimeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'{op}: {name} of shape {tuple(t.shape)} does not broadcast to {layout} = {target}')


def describe(x: object) -> str:
    return f'a tensor of dtype {x.dtype}' if isinstance(x, Tensor) else type(x).__name__


def resolve_scale(op: str, scale: float | None, q: Tensor) -> float:
    if scale is None:
        return q.shape[-1] ** -0.5
    if isinstance(scale, Tensor) or not isinstance(scale, (int, float)):
        raise TypeError(f'{op}: scale must be a Python number or None, got {type(scale).__name__}')
    return float(scale)


INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def positive_int(op: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{op}: {name} must be a positive int, got {value!r}')
    return value

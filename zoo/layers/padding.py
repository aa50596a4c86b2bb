"""Pad feature maps to a multiple of a window/region size, and crop them back.

Families whose attention needs divisible sizes (regions, windows, groups) pad per stage
inside the model, as the official dense backbones do, so that any input size works and
inputs that are already divisible are untouched (outputs at the default size unchanged).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# A traced graph (ONNX export) must not freeze the "no padding needed" branch of the traced
# size: while tracing, pad and crop unconditionally, with the amounts computed from the shape.
from .tracing import is_tracing

__all__ = ['pad_to_multiple', 'crop_to']


def pad_to_multiple(x: torch.Tensor, multiple: int | tuple[int, int], *, channels_last: bool = False,
                    value: float = 0.0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the bottom/right of a feature map so H and W are multiples of ``multiple``.

    Args:
        x: ``(B, C, H, W)``, or ``(B, H, W, C)`` with ``channels_last=True``.
        multiple: the divisor for H and W (int or ``(mh, mw)``).
        channels_last: layout of ``x``.
        value: the padding value.

    Returns:
        The padded tensor and the original ``(H, W)``, for ``crop_to``.
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    # Ceil-division instead of (-h) % m (same values): torch.compile's inductor cannot turn a
    # dynamic size holding a Mod into float arithmetic (grid_sample's decomposition needs that).
    pad_h, pad_w = (h + mh - 1) // mh * mh - h, (w + mw - 1) // mw * mw - w
    if pad_h or pad_w or is_tracing():  # traced: keep the (possibly zero) pad in the graph
        pad = (0, 0, 0, pad_w, 0, pad_h) if channels_last else (0, pad_w, 0, pad_h)
        x = F.pad(x, pad, value=value)
    return x, (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int], *, channels_last: bool = False) -> torch.Tensor:
    """Undo ``pad_to_multiple``: keep the top-left ``size`` of the feature map."""
    h, w = size
    if channels_last:
        return x[:, :h, :w, :] if is_tracing() or (x.shape[1], x.shape[2]) != (h, w) else x
    return x[..., :h, :w] if is_tracing() or tuple(x.shape[-2:]) != (h, w) else x

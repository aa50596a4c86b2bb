"""Deformable convolution (DCNv1) without a custom CUDA op, exportable to ONNX.

Several official repos ship DCNv1 as a compiled CUDA extension (mmcv's or their own copy)
that users struggle to build. ``torchvision.ops.deform_conv2d`` computes the same thing on
CPU and GPU with the same parameters and offset layout: for output pixel ``(i, j)`` and
kernel tap ``(ky, kx)``, the input is sampled bilinearly at::

    y = i * stride_h - pad_h + ky * dilation_h + dy
    x = j * stride_w - pad_w + kx * dilation_w + dx

where ``(dy, dx)`` are offset channels ``2 * (g * kh * kw + ky * kw + kx) + (0, 1)`` for
offset group ``g``; samples outside the image read zeros (each of the four bilinear corners
that falls outside contributes 0).

torchvision's op has no ONNX symbolic. ONNX has ``DeformConv`` (opset 19), which ONNX
Runtime 1.31 runs, but the zoo exports at opset 18 by default and the op would still need a
symbolic of our own, so :func:`deform_conv2d_decomposed` rewrites the op exactly with
standard ops: ``grid_sample`` (bilinear, zero padding) gathers every tap of every output
pixel, and one matmul over (input channel, tap) applies the weights. It is used
automatically while exporting to ONNX and is also the faster CPU path (about 2x
torchvision's CPU kernel on LITv2's 2x2 stride-2 layers).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

__all__ = ['deform_conv2d', 'deform_conv2d_decomposed', 'DeformConv2dPack', 'DEFORM_CONV_IMPLS']

DEFORM_CONV_IMPLS = ('torchvision', 'decomposed')


def _tap_positions(n_out: int, stride: int, pad: int, dilation: int, k: int, ref: torch.Tensor) -> torch.Tensor:
    """Undeformed sampling positions, ``(k, n_out)``: ``o * stride - pad + t * dilation``."""
    # Integer aranges, cast after: symbolic sizes never become Python floats (torch.compile).
    out = torch.arange(n_out, device=ref.device) * stride - pad
    taps = torch.arange(k, device=ref.device) * dilation
    return (taps[:, None] + out[None, :]).to(ref.dtype)


def deform_conv2d_decomposed(
        x: torch.Tensor,
        offset: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """DCNv1 with ``grid_sample`` and ``conv2d`` only (same arguments as torchvision's op).

    Args:
        x: input, ``(B, C, H, W)``.
        offset: ``(B, 2 * offset_groups * kh * kw, H_out, W_out)``, ``[dy, dx]`` per tap.
        weight: ``(C_out, C / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride: convolution stride.
        padding: zero padding of the input (implicit: samples outside read 0).
        dilation: spacing of the kernel taps.

    Returns:
        ``(B, C_out, H_out, W_out)``.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    groups = c // weight.shape[1]
    h_out, w_out = offset.shape[-2:]
    n_off = offset.shape[1] // (2 * kh * kw)
    if n_off * 2 * kh * kw != offset.shape[1] or c % n_off:
        raise ValueError(f'deform_conv2d: offset has {offset.shape[1]} channels, not 2 * groups * {kh} * {kw} '
                         f'with a number of offset groups that divides the {c} input channels')
    off = offset.reshape(b, n_off, kh, kw, 2, h_out, w_out)
    ys = _tap_positions(h_out, sh, ph, dh, kh, x)  # (kh, H_out)
    xs = _tap_positions(w_out, sw, pw, dw, kw, x)  # (kw, W_out)
    py = off[:, :, :, :, 0] + ys[:, None, :, None]  # (B, G, kh, kw, H_out, W_out)
    px = off[:, :, :, :, 1] + xs[None, :, None, :]
    k, n = kh * kw, h_out * w_out
    # Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False: pixel centres at (2p + 1) / size - 1);
    # the sampled "image" is (taps, output pixels).
    # The sizes enter as integer tensors, never as Python floats: torch.compile with dynamic
    # shapes fails on float scalars whose size expression carries a padding modulo (torch 2.14).
    size = torch.stack([torch.full((), w, dtype=torch.long, device=x.device),
                        torch.full((), h, dtype=torch.long, device=x.device)]).to(x.dtype)
    grid = ((2 * torch.stack((px, py), dim=-1) + 1) / size - 1).reshape(b * n_off, k, n, 2)
    sampled = F.grid_sample(x.reshape(b * n_off, c // n_off, h, w), grid, mode='bilinear',
                            padding_mode='zeros', align_corners=False)
    sampled = sampled.reshape(b, c, k, n)
    c_out = weight.shape[0]
    if groups == 1:
        # One matmul over (input channel, tap); the result is channels-last, returned as an NCHW view.
        out = sampled.permute(0, 3, 1, 2).reshape(b, n, c * k) @ weight.reshape(c_out, c * k).t()
        if bias is not None:
            out = out + bias
        return out.reshape(b, h_out, w_out, c_out).permute(0, 3, 1, 2)
    out = torch.einsum('bgkn,gok->bgon', sampled.reshape(b, groups, (c // groups) * k, n),
                       weight.reshape(groups, c_out // groups, (c // groups) * k)).reshape(b, c_out, h_out, w_out)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def deform_conv2d(
        x: torch.Tensor,
        offset: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        *,
        impl: str | None = None,
) -> torch.Tensor:
    """DCNv1: torchvision's op or its exact decomposition.

    Args:
        x, offset, weight, bias, stride, padding, dilation: as in
            ``torchvision.ops.deform_conv2d`` (see :func:`deform_conv2d_decomposed`).
        impl: ``'torchvision'``, ``'decomposed'``, or None: the decomposition on CPU (faster
            than torchvision's CPU kernel) and while exporting to ONNX (torchvision's op has no
            ONNX symbolic), torchvision's kernel on other devices; the decomposition also
            when torchvision is not installed.

    In float16/bfloat16 (inputs or autocast) the op computes in float32 and returns the
    input's dtype.
    """
    if impl is None:
        impl = 'decomposed' if torch.onnx.is_in_onnx_export() or x.device.type == 'cpu' else 'torchvision'
    if impl not in DEFORM_CONV_IMPLS:
        raise ValueError(f'deform_conv2d: impl must be one of {DEFORM_CONV_IMPLS} or None, got {impl!r}')
    device = x.device.type
    autocast_available = torch.amp.is_autocast_available(device)
    low_precision = x.dtype in (torch.float16, torch.bfloat16) or offset.dtype in (torch.float16, torch.bfloat16)
    if autocast_available and (low_precision or torch.is_autocast_enabled(device)):
        # The sampling positions (tap + offset, up to the map size) need float32: in bfloat16 a
        # position near 56 px is rounded to a quarter pixel. Like the official CUDA op under apex
        # (amp.float_function) and torchvision's autocast kernel, the whole op runs in float32
        # and returns the input's dtype.
        with torch.autocast(device, enabled=False):
            out = _deform_conv2d_impl(x.float(), offset.float(), weight.float(),
                                      None if bias is None else bias.float(), stride, padding, dilation, impl)
        return out.to(x.dtype)
    return _deform_conv2d_impl(x, offset, weight, bias, stride, padding, dilation, impl)


def _deform_conv2d_impl(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        stride: int | tuple[int, int], padding: int | tuple[int, int],
                        dilation: int | tuple[int, int], impl: str) -> torch.Tensor:
    if impl == 'torchvision':
        try:
            from torchvision.ops import deform_conv2d as tv_deform_conv2d
        except ImportError:
            impl = 'decomposed'
        else:
            return tv_deform_conv2d(x, offset, weight, bias, stride=_pair(stride), padding=_pair(padding),
                                    dilation=_pair(dilation))
    return deform_conv2d_decomposed(x, offset, weight, bias, stride, padding, dilation)


class DeformConv2dPack(nn.Module):
    """DCNv1 whose offsets come from a plain conv of the input (mmcv's ``DeformConv2dPack``).

    The parameter names and shapes are those of the official CUDA modules (``weight``,
    ``bias``, ``conv_offset.weight``, ``conv_offset.bias``), so official checkpoints load
    as they are. The offset conv starts at zero: an untrained layer is a plain convolution.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel_size: kernel size.
        stride: stride (of both the offset conv and the deformable conv).
        padding: zero padding.
        dilation: dilation.
        groups: groups of the deformable conv's weight.
        offset_groups: channel groups with their own offsets (mmcv's ``deform_groups``).
        bias: learnable bias of the deformable conv.
        impl: see :func:`deform_conv2d` (None: the decomposition on CPU and in ONNX export,
            torchvision's kernel elsewhere).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, offset_groups: int = 1,
                 bias: bool = True, impl: str | None = None):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(out_chs, in_chs // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_chs)) if bias else None
        self.conv_offset = nn.Conv2d(in_chs, offset_groups * 2 * self.kernel_size[0] * self.kernel_size[1],
                                     self.kernel_size, self.stride, self.padding, self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, self.stride, self.padding,
                             self.dilation, impl=self.impl)

"""A 1x1 convolution that runs as a matrix multiply.

PyTorch's CPU convolution sends 1x1 convs to its slow im2col path (``thnn_conv2d``) for
both memory formats; the same product as ``F.linear`` over the channels of a channels-last
map is several times faster (measured 166 ms vs 24 ms for 64 -> 256 channels on 8x56x56,
one thread). :class:`PointwiseConv2d` is a drop-in ``nn.Conv2d`` (same parameters, same
state-dict keys, same NCHW-shaped output) that does that.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['PointwiseConv2d']


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(in_chs, out_chs, 1, bias=bias)`` computed with ``F.linear`` on channels-last data.

    The output is an NCHW-shaped tensor in channels-last memory (a view of the linear's
    ``(B, H, W, C)`` result), so a model kept in channels-last format needs no copies.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        bias: learnable bias.
    """

    def __init__(self, in_chs: int, out_chs: int, bias: bool = True, **kwargs):
        super().__init__(in_chs, out_chs, 1, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1 or self.stride != (1, 1) or self.padding != (0, 0) or self.dilation != (1, 1):
            return super().forward(x)
        return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)

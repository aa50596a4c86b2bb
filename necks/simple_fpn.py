"""ViTDet's simple feature pyramid: strides 4-32 (and 64) from one stride-16 map of a plain ViT.

Li, Mao, Girshick, He. Exploring Plain Vision Transformer Backbones for Object Detection
(ECCV 2022, arXiv:2203.16527); Detectron2's ``SimpleFeaturePyramid``. A plain (non-
hierarchical) backbone such as iLLaMA has one stride-16 output; the pyramid is built from its
last map alone:

- stride 4: 2x2 stride-2 transposed conv (C -> C/2) - LayerNorm - GELU - 2x2 stride-2
  transposed conv (C/2 -> C/4);
- stride 8: 2x2 stride-2 transposed conv (C -> C/2);
- stride 16: the map itself;
- stride 32: 2x2 max pooling (ceil mode, so any map size works);

then, per level, a 1x1 conv and a 3x3 conv to ``out_channels``, each bias-free and followed
by a channel LayerNorm. Levels beyond ``len(scale_factors)`` (``num_outs`` larger) come from
the coarsest output: a stride-2 1x1 max pooling each (Detectron2's ``LastLevelMaxPool``, what
ViTDet's Mask R-CNN uses for stride 64), or with ``add_extra_convs=True`` a 3x3 stride-2 conv
each, ReLU between them (Detectron2's ``LastLevelP6P7`` on the output, ViTDet's RetinaNet
for strides 64 and 128). Segmentation heads take the four levels (``num_outs=4``).

Registered in mmengine's root ``MODELS`` (seen from the mmdet and mmseg scopes) as
``SimpleFeaturePyramid``; configs import it with ``custom_imports=dict(imports=['zoo.mm',
'necks'])``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d

__all__ = ['SimpleFeaturePyramid']


def _scale_layers(dim: int, scale: float, eps: float) -> tuple[nn.Module, int]:
    """The resampling of one level and its output channels."""
    if scale == 4.0:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2, eps=eps), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)), dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2, ceil_mode=True), dim
    raise ValueError(f'scale factors must be among 4, 2, 1, 0.5; got {scale}')


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid on the last map of a plain ViT backbone.

    Args:
        in_channels: channels of the backbone map (an int, or the backbone's list of channels
            of which ``in_index`` is used).
        out_channels: channels of every output level.
        scale_factors: resampling of the input map per level (4 = stride 4 from stride 16).
        num_outs: output levels; those beyond ``len(scale_factors)`` are extra coarser levels.
        add_extra_convs: make the extra levels with 3x3 stride-2 convs instead of max pooling.
        in_index: which of the backbone's outputs to use (the last by default).
        norm_eps: eps of the channel LayerNorms.
        init_cfg: mm init config.
    """

    def __init__(self, in_channels: int | Sequence[int], out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5,
                 add_extra_convs: bool = False, in_index: int = -1, norm_eps: float = 1e-6,
                 init_cfg: dict | list[dict] | None = None):
        super().__init__(init_cfg=init_cfg)
        dim = in_channels if isinstance(in_channels, int) else list(in_channels)[in_index]
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs must be at least len(scale_factors) = {len(scale_factors)}, got {num_outs}')
        if 4.0 in scale_factors and dim % 4:
            raise ValueError(f'in_channels {dim} must be a multiple of 4 for the stride-4 level')
        self.in_index = in_index
        self.num_outs = num_outs
        self.scales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for scale in scale_factors:
            layers, chs = _scale_layers(dim, float(scale), norm_eps)
            self.scales.append(layers)
            self.lateral_convs.append(nn.Sequential(
                nn.Conv2d(chs, out_channels, 1, bias=False), LayerNorm2d(out_channels, eps=norm_eps)))
            self.output_convs.append(nn.Sequential(
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels, eps=norm_eps)))
        n_extra = num_outs - len(scale_factors)
        self.extra_convs = nn.ModuleList([
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(n_extra if add_extra_convs else 0)])
        self.n_extra = n_extra

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        outs = [conv(lateral(scale(x)))
                for scale, lateral, conv in zip(self.scales, self.lateral_convs, self.output_convs)]
        for i in range(self.n_extra):
            if self.extra_convs:
                outs.append(self.extra_convs[i](F.relu(outs[-1]) if i else outs[-1]))
            else:
                outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)

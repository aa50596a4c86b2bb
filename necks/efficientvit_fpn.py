"""EfficientViT-style FPN: mmdet's FPN plus transposed-conv levels above the finest input.

The neck of the official SHViT detection recipes (ysj9909/SHViT ``downstream/configs``),
which reuse the neck of EfficientViT (Liu et al., CVPR 2023; microsoft/Cream,
``EfficientViT/downstream/efficientvit_fpn.py``). Their backbones start at stride 16, so
the pyramid gets its finer levels from the finest lateral by 2x2 stride-2 transposed
convolutions: with SHViT's strides 16/32/64,

- RetinaNet (``num_extra_trans_convs=1``, ``add_extra_convs='on_input'``, ``num_outs=5``):
  one transposed level (stride 8) + the three inputs + one strided conv (stride 128);
- Mask R-CNN (``num_extra_trans_convs=2``, no extra convs, ``num_outs=5``): two transposed
  levels (strides 4 and 8) + the three inputs.

Behaviour and parameter names follow the official module, so its detection checkpoints
load (checked against the official module built with both recipes' arguments: the same
state-dict keys, shapes and order, the same outputs; ``tests/data/neck_parity``):
``lateral_convs``/``fpn_convs`` as mmdet's FPN, then ``extra_trans_convs.{i}``
(transposed conv, chained: the i-th upsamples the (i-1)-th, starting from the finest
lateral after the top-down pass) and ``extra_fpn_convs.{i}`` (3x3 conv). Outputs are
ordered finest first; note that the official forward pairs ``extra_fpn_convs[0]`` with the
*finest* transposed level (produced by the last transposed conv), which is kept. Unlike the
official code, ``num_extra_trans_convs=0`` works (it is then mmdet's FPN).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.necks import FPN
from mmengine.registry import MODELS

__all__ = ['EfficientViTFPN']


@MODELS.register_module()
class EfficientViTFPN(FPN):
    """mmdet's ``FPN`` with ``num_extra_trans_convs`` transposed-conv levels below the finest input.

    Args:
        in_channels: channels of each input level.
        out_channels: channels of every output.
        num_outs: total outputs, transposed levels included.
        num_extra_trans_convs: levels made by 2x2 stride-2 transposed convs (finer than the
            finest input used).
        no_norm_on_lateral: no norm on the lateral and transposed convs.
        norm_cfg: norm of every conv (``None`` in the official recipes).
        **kwargs: the other arguments of mmdet's ``FPN`` (``start_level``, ``end_level``,
            ``add_extra_convs``, ``relu_before_extra_convs``, ``conv_cfg``, ``act_cfg``,
            ``upsample_cfg``, ``init_cfg``).
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int, num_extra_trans_convs: int = 0,
                 no_norm_on_lateral: bool = False, norm_cfg: dict | None = None, **kwargs):
        if num_extra_trans_convs < 0 or num_extra_trans_convs >= num_outs:
            raise ValueError(f'num_extra_trans_convs must be in [0, num_outs), got {num_extra_trans_convs}')
        # mmdet's FPN builds the input levels and the coarser extra levels.
        super().__init__(in_channels, out_channels, num_outs - num_extra_trans_convs,
                         no_norm_on_lateral=no_norm_on_lateral, norm_cfg=norm_cfg, **kwargs)
        self.num_outs = num_outs
        self.num_extra_trans_convs = num_extra_trans_convs
        conv_cfg, act_cfg = kwargs.get('conv_cfg'), kwargs.get('act_cfg')
        self.extra_trans_convs = nn.ModuleList()
        self.extra_fpn_convs = nn.ModuleList()
        for _ in range(num_extra_trans_convs):
            self.extra_trans_convs.append(ConvModule(
                out_channels, out_channels, 2, stride=2, padding=0, conv_cfg=dict(type='deconv'),
                norm_cfg=None if no_norm_on_lateral else norm_cfg, act_cfg=act_cfg, inplace=False))
            self.extra_fpn_convs.append(ConvModule(
                out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                act_cfg=act_cfg, inplace=False))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'expected {len(self.in_channels)} inputs, got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        # top-down pathway, as mmdet's FPN
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                laterals[i - 1] = laterals[i - 1] + F.interpolate(
                    laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
        # transposed levels, chained from the finest lateral; finest first
        finer = []
        x = laterals[0]
        for trans in self.extra_trans_convs:
            x = trans(x)
            finer.insert(0, x)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]
        # coarser extra levels, as mmdet's FPN
        num_coarse = self.num_outs - self.num_extra_trans_convs
        if num_coarse > len(outs):
            if not self.add_extra_convs:
                for _ in range(num_coarse - len(outs)):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[len(laterals)](source))
                for i in range(len(laterals) + 1, num_coarse):
                    prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](prev))
        finer_outs = [conv(f) for conv, f in zip(self.extra_fpn_convs, finer)]
        return tuple(finer_outs + outs)

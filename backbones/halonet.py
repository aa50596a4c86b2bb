"""HaloNet: blocked local self-attention with halos, on top of timm's halo models

Paper: `Scaling Local Self-Attention for Parameter Efficient Visual Backbones` -
https://arxiv.org/abs/2103.12731 (Vaswani et al., CVPR 2021). The authors released no code
or weights; timm's ResNet-style hybrids (``halonet26t``, ``sehalonet33ts``, ``halonet50ts``,
``eca_halonext26ts``: bottleneck ResNets whose later blocks replace the 3x3 conv by halo
attention) and their weights, trained by timm's author, are the reference here
(https://github.com/huggingface/pytorch-image-models, Apache-2.0).

Halo attention: the map is cut into ``block x block`` query blocks (8x8); each block
attends to its block grown by ``halo`` pixels on every side (keys and values zero-padded
by the halo at the image border), with relative position logits (``height_rel``,
``width_rel``). A stride-2 block subsamples its queries.

How this module relates to timm. The models are timm's ``ByobNet`` built from timm's own
configs, not re-implemented; the four names with weights are registered again here,
replacing timm's entrypoints when ``zoo`` is imported (timm's overwrite warning is silenced
for exactly these names). What that adds:

- **any input size, and ONNX with dynamic H/W**. timm's ``HaloAttn`` needs the feature map
  divisible by the block size, so its models take only multiples of 256 (8 x stride 32);
  224 fails; and its ``unfold`` freezes the traced size in ONNX exports. Here every halo
  attention layer is computed by :func:`zoo.attention.halo_attention` (written once for the
  zoo, with a reference backend and an SDPA one built from gathers): a map that is not a
  multiple of the block size is treated as extended at the bottom/right by zero keys and
  values -- exactly what the halo padding already gives at the border -- and the output is
  cropped back (``ceil(n / 2)`` for stride 2). On divisible inputs this is timm's layer (the
  outputs at 256 equal timm's to float rounding). The attention modules keep timm's
  parameters and names (their class is swapped for :class:`HaloAttention` after
  construction), so timm's weights load unchanged.
- ``features_only``/``forward_intermediates`` over the **four stages** (strides 4-32, the
  last one after ``final_conv`` as in timm) instead of timm's five taps (timm also returns
  the stride-2 stem map), so that feature index ``i`` is ``stages[i]`` as in the other
  families and the mm adapter; ``NHWC`` output.
- input validation (``zoo.layers.validate_input``: channels, dtype, NaN, at least 32x32),
  and batches of 0 images (timm's ECA gate, swapped like the halo layer, cannot take them).

The pretrained cfgs are timm's own, registered unchanged (``zoo.registry.with_timm_tags``):
timm's tags (``a1h_in1k``, ``ra2_in1k``, ``c1_in1k``), download locations (hub repo
``timm/<name>.<tag>``, release URL) and evaluation settings (256x256, crop 0.94-0.95,
bicubic, ImageNet mean/std). The weights are timm's trainings, not an official release, so
the zoo adds no ``official_`` tag (the family is listed in ``TIMM_WEIGHT_FAMILIES`` of
``tests/test_contract.py``). Their ``min_input_size`` (256) is timm's model's; the zoo's
takes any size from 32x32 (``model.min_input_size``).
``halonet_h1`` (the paper's H1, no weights) and the other halo hybrids stay timm's.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers.eca import EcaModule
from timm.layers.halo_attn import HaloAttn
from timm.models import byoanet as timm_byoanet
from timm.models import register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from timm.models.byoanet import model_cfgs
from timm.models.byobnet import ByobNet, ByoModelCfg

from zoo.attention import halo_attention
from zoo.builder import build_zoo_model
from zoo.layers import validate_input
from zoo.registry import with_timm_tags
from zoo.staged import FeatureIntermediates

__all__ = ['HaloNet', 'HaloAttention', 'EcaAttention']


class HaloAttention(HaloAttn):
    """timm's ``HaloAttn`` computed by :func:`zoo.attention.halo_attention`: any map size, dynamic ONNX.

    Same parameters and names as timm's layer (``q``, ``kv``, ``pos_embed.height_rel`` /
    ``width_rel``); used by swapping the class of timm's instances, see :class:`HaloNet`. A
    map that is not a multiple of the block size is treated as extended at the bottom/right
    by the halo's zero keys and values, and the output is cropped back (``ceil(n / 2)`` for
    stride 2); on divisible maps this is timm's layer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads, dq, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        q, kv = self.q(x), self.kv(x)
        # Sizes from the traced shapes (not unflatten), so that ONNX exports keep them dynamic.
        q = q.reshape(q.shape[0], heads, dq, q.shape[2], q.shape[3]).permute(0, 1, 3, 4, 2)  # B, heads, H', W', dq
        kv = kv.reshape(kv.shape[0], heads, dq + dv, kv.shape[2], kv.shape[3]).permute(0, 1, 3, 4, 2)
        k, v = kv.split([dq, dv], dim=-1)
        out = halo_attention(
            q, k, v, self.block_size, self.halo_size, query_stride=self.block_stride,
            rel_h=self.pos_embed.height_rel, rel_w=self.pos_embed.width_rel,
            rel_scaled=self.scale_pos_embed, scale=self.scale,
        )
        out = out.permute(0, 1, 4, 2, 3)
        out = out.reshape(out.shape[0], heads * dv, out.shape[3], out.shape[4])
        if isinstance(self.pool, nn.AvgPool2d):  # timm's avg-down variant; the last odd row/col averages alone
            out = F.avg_pool2d(out, 2, ceil_mode=True)
        return out


class EcaAttention(EcaModule):
    """timm's ``EcaModule`` with the sizes taken from the input, so that it takes a batch of 0
    images (timm's ``view(B, 1, -1)`` cannot infer ``-1`` from 0 elements). Same parameters;
    used by swapping the class of timm's instances, see :class:`HaloNet`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        y = self.conv(x.mean((2, 3)).view(B, 1, C))
        if self.conv2 is not None:
            y = self.conv2(self.act(y))
        return x * self.gate(y).view(B, C, 1, 1).expand_as(x)


class HaloNet(FeatureIntermediates, ByobNet):
    """timm's ``ByobNet`` halo models with any-size halo attention and four-stage features.

    Args:
        cfg: timm's model config (``timm.models.byoanet.model_cfgs[name]``).
        **kwargs: ``ByobNet`` arguments (``in_chans``, ``num_classes``, ``global_pool``,
            ``drop_rate``, ``drop_path_rate``...).
    """

    def __init__(self, cfg: ByoModelCfg, **kwargs: Any):
        super().__init__(cfg, **kwargs)
        for module in self.modules():
            if isinstance(module, HaloAttn):
                module.__class__ = HaloAttention
            elif type(module) is EcaModule:
                module.__class__ = EcaAttention
        # One entry per stage (timm's list also starts with the stem's stride-2 map).
        self.feature_info = [dict(f) for f in self.feature_info if f['stage'] > 0]
        self.min_input_size = self.feature_info[-1]['reduction']

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    def _check_input(self, x: torch.Tensor) -> None:
        weight = next(self.stem.parameters())
        validate_input(x, in_chans=weight.shape[1], min_size=self.min_input_size,
                       weight_dtype=weight.dtype, name='HaloNet')

    # The hooks of the shared forward_intermediates (zoo.staged.FeatureIntermediates): timm's
    # stem, the last stage followed by ``final_conv`` as in timm's forward_features.

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.stem(x)

    def _forward_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
        return self.final_conv(x) if index == len(self.stages) - 1 else x

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages (``final_conv`` and head) that the selected intermediates do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.final_conv = nn.Identity()
            self.num_features = self.feature_info[max_index]['num_chs']
        self.stages = self.stages[:max_index + 1]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return super().forward_features(x)


def _create_halonet(variant: str, pretrained: bool = False, **kwargs: Any) -> HaloNet:
    return build_zoo_model(
        HaloNet, variant, pretrained,
        model_cfg=model_cfgs[variant],
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


# timm's cfgs, unchanged: the weights and their evaluation settings are timm's.
default_cfgs = with_timm_tags(timm_byoanet, ['halonet26t', 'sehalonet33ts', 'halonet50ts', 'eca_halonext26ts'])

# These names are timm's: registering them again replaces timm's entrypoints on purpose.
with warnings.catch_warnings():
    warnings.filterwarnings(
        'ignore', message=r'Overwriting (halonet26t|sehalonet33ts|halonet50ts|eca_halonext26ts) in registry')

    @register_model
    def halonet26t(pretrained: bool = False, **kwargs: Any) -> HaloNet:
        """HaloNet with a ResNet26-T body, halo attention in the last two stages: 12.48M params."""
        return _create_halonet('halonet26t', pretrained, **kwargs)

    @register_model
    def sehalonet33ts(pretrained: bool = False, **kwargs: Any) -> HaloNet:
        """HaloNet with a ResNet33-T body, SE in the conv blocks, SiLU: 13.69M params."""
        return _create_halonet('sehalonet33ts', pretrained, **kwargs)

    @register_model
    def halonet50ts(pretrained: bool = False, **kwargs: Any) -> HaloNet:
        """HaloNet with a ResNet50-T body, SiLU, halo attention in the last three stages: 22.73M params."""
        return _create_halonet('halonet50ts', pretrained, **kwargs)

    @register_model
    def eca_halonext26ts(pretrained: bool = False, **kwargs: Any) -> HaloNet:
        """HaloNet with a ResNeXt26-T body, ECA in the conv blocks, SiLU: 10.76M params."""
        return _create_halonet('eca_halonext26ts', pretrained, **kwargs)

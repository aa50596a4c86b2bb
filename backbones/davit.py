"""DaViT: Dual Attention Vision Transformers, on top of timm's ``davit_{tiny,small,base}``

Paper: `DaViT: Dual Attention Vision Transformers` - https://arxiv.org/abs/2204.03645
(Ding et al., ECCV 2022)
Official code: https://github.com/dingmyu/davit (MIT); weights on HKU SharePoint pages (no
direct download), mirrored in timm's layout as ``timm/davit_{tiny,small,base}.msft_in1k``.

Four stages (strides 4 to 32); each depth unit is a spatial block (7x7 window attention) and
a channel block (attention over channels, heads as channel groups), each with a
depthwise-conv position encoding before attention and before the MLP.

How this module relates to timm. timm's ``DaVit`` and its ``checkpoint_filter_fn`` already
reproduce the official model (any input size, official files load; the parity fixture
passes), so nothing is re-implemented: :class:`DaViT` subclasses timm's class, and the
three official variants are registered again here, replacing timm's entrypoints when
``zoo`` is imported (timm's overwrite warning is silenced for exactly these names). timm's
tag ``msft_in1k`` stays registered with timm's values and stays the default, so timm code
sees the same cfgs and weights. What the zoo adds:

- input validation (``zoo.layers.validate_input``: channels, dtype, NaN, at least 32x32);
- ``forward_intermediates`` with ``NHWC`` output, and ``features_only`` through it;
- the spatial blocks' window attention through ``zoo.attention.window_attention``
  (:class:`SpatialWindowBlock`: same parameters and computation), so that the attention
  backend setting applies (NATTEN's blocked attention computes these bias-free windows);
- the MLPs as ``zoo.layers.Mlp`` (timm's, keeping the hidden pre-activation only for the
  backward: less training memory, same values);
- the tag ``official_in1k`` beside timm's: the official evaluation settings (crop 0.9,
  bicubic: the official ``validate.py`` uses the model's default cfg) and license (MIT),
  pointing at timm's hub copy of the official weights (same values, converted layout)
  because the official host has no direct download (its ``notes`` say where each value
  comes from); the official files themselves load with
  ``pretrained_cfg_overlay=dict(file=...)`` through timm's filter.

timm's other DaViT entries (``davit_large/huge/giant`` without weights, the Florence-2
towers ``davit_*_fl``) stay timm's. The official dense recipes use all four stages with an
extra LayerNorm on each output (the mm adapter's ``out_norms``).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import davit as timm_davit
from timm.models import register_model
from timm.models._manipulate import checkpoint
from timm.layers import Mlp as TimmMlp
from timm.models.davit import DaVit as TimmDaVit
from timm.models.davit import SpatialBlock
from timm.models.davit import checkpoint_filter_fn

from zoo.attention import window_attention
from zoo.builder import build_zoo_model
from zoo.layers import Mlp, validate_input
from zoo.registry import with_timm_tags
from zoo.staged import FeatureIntermediates

__all__ = ['DaViT', 'SpatialWindowBlock', 'checkpoint_filter_fn']


class SpatialWindowBlock(SpatialBlock):
    """timm's spatial block with its window attention through ``zoo.attention.window_attention``.

    Same parameters and the same computation as timm's (and the official) block: the map is
    zero-padded to a multiple of the window after ``norm1`` and the padded tokens take part in
    attention as keys, unmasked, as in the official code. Going through ``window_attention``
    lets the backend setting choose the kernel (SDPA by default; NATTEN's blocked attention
    computes these bias-free windows exactly). :class:`DaViT` gives its blocks this class.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        shortcut = self.cpe1(x).flatten(2).transpose(1, 2)
        x = self.norm1(shortcut).view(B, H, W, C)
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
        Hp, Wp = x.shape[1:3]
        attn = self.attn
        heads = attn.num_heads
        qkv = attn.qkv(x).view(B, Hp, Wp, 3, heads, C // heads).permute(3, 0, 4, 1, 2, 5)
        out = window_attention(qkv[0], qkv[1], qkv[2], (wh, ww), scale=attn.scale)  # (B, heads, Hp, Wp, d)
        out = attn.proj(out.permute(0, 2, 3, 1, 4).reshape(B, Hp, Wp, C))
        x = shortcut + self.drop_path1(out[:, :H, :W].reshape(B, H * W, C))
        x = self.cpe2(x.transpose(1, 2).view(B, C, H, W))
        if self.mlp is not None:
            x = x.flatten(2).transpose(1, 2)
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
            x = x.transpose(1, 2).view(B, C, H, W)
        return x


class DaViT(FeatureIntermediates, TimmDaVit):
    """timm's DaViT with input validation and ``NHWC`` intermediates.

    Args:
        **kwargs: timm's ``DaVit`` arguments (``depths``, ``embed_dims``, ``num_heads``,
            ``window_size``, ``in_chans``, ``num_classes``, ``drop_path_rate``...).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.min_input_size = self.feature_info[-1]['reduction']  # one pixel at stride 32
        # timm's constructor takes no block class: the spatial blocks become SpatialWindowBlock
        # (a subclass that only replaces forward), keeping their modules and parameters.
        for module in self.modules():
            if type(module) is SpatialBlock:
                module.__class__ = SpatialWindowBlock
            elif type(module) is TimmMlp:  # same modules, keeps one hidden tensor per step
                module.__class__ = Mlp

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    def _check_input(self, x: torch.Tensor) -> None:
        validate_input(x, in_chans=self.in_chans, min_size=self.min_input_size,
                       weight_dtype=self.stem.conv.weight.dtype, name='DaViT')

    # The hooks of the shared forward_intermediates (zoo.staged.FeatureIntermediates): timm's
    # stem, stages checkpointed whole as timm does, ``norm_pre`` after the last stage.

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.stem(x)

    def _forward_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)

    def _intermediate(self, index: int, x: torch.Tensor, norm: bool, output_fmt: str) -> torch.Tensor:
        """The stage output; with ``norm``, the last one through ``norm_pre`` (an identity for
        the official models, whose head norm comes after pooling)."""
        if norm and index == len(self.stages) - 1:
            x = self.norm_pre(x)
        return super()._intermediate(index, x, norm, output_fmt)

    def _forward_end(self, x: torch.Tensor, complete: bool) -> torch.Tensor:
        return self.norm_pre(x) if complete else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return super().forward_features(x)


def _create_davit(variant: str, pretrained: bool = False, **kwargs: Any) -> DaViT:
    return build_zoo_model(
        DaViT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(variant: str, **kwargs: Any) -> dict[str, Any]:
    return {
        'hf_hub_id': f'timm/{variant}.msft_in1k', 'hf_hub_filename': 'model.safetensors',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'head.fc',
        'license': 'mit', 'paper_ids': 'arXiv:2204.03645',
        'paper_name': 'DaViT: Dual Attention Vision Transformers',
        'origin_url': 'https://github.com/dingmyu/davit',
        'notes': (
            f'hf_hub_id: timm/{variant}.msft_in1k, timm\'s conversion of the official weights (the official '
            'SharePoint pages have no direct download); the same tensors as the msft_in1k tag',
            'crop_pct: 0.9, bicubic, ImageNet mean/std: the official validate.py, which uses the model\'s '
            'default cfg (timm\'s msft_in1k tag says crop 0.95)',
            'license: MIT, the official repository (timm\'s msft_in1k tag says apache-2.0)',
        ),
        **kwargs,
    }


# timm's msft_in1k tags stay first (the default, timm's values); official_in1k sits beside them.
default_cfgs = with_timm_tags(timm_davit, ['davit_tiny', 'davit_small', 'davit_base'], {
    'davit_tiny.official_in1k': _cfg('davit_tiny'),
    'davit_small.official_in1k': _cfg('davit_small'),
    'davit_base.official_in1k': _cfg('davit_base'),
})

# These names are timm's: registering them again replaces timm's entrypoints on purpose.
with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'Overwriting davit_(tiny|small|base) in registry')

    @register_model
    def davit_tiny(pretrained: bool = False, **kwargs: Any) -> DaViT:
        """DaViT-T: 28.36M params, 82.8% top-1."""
        args = dict(depths=(1, 1, 3, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24))
        return _create_davit('davit_tiny', pretrained, **dict(args, **kwargs))

    @register_model
    def davit_small(pretrained: bool = False, **kwargs: Any) -> DaViT:
        """DaViT-S: 49.75M params, 84.2% top-1."""
        args = dict(depths=(1, 1, 9, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24))
        return _create_davit('davit_small', pretrained, **dict(args, **kwargs))

    @register_model
    def davit_base(pretrained: bool = False, **kwargs: Any) -> DaViT:
        """DaViT-B: 87.95M params, 84.6% top-1."""
        args = dict(depths=(1, 1, 9, 1), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32))
        return _create_davit('davit_base', pretrained, **dict(args, **kwargs))

"""SHViT: Single-Head Vision Transformer, on top of timm's ``shvit_s{1..4}``

Paper: `SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design` -
https://arxiv.org/abs/2401.16456 (Yun and Ro, CVPR 2024)
Official code: https://github.com/ysj9909/SHViT (MIT); weights on its GitHub releases.

A 16x16 patchifying stem (four stride-2 3x3 conv-BN, ReLU between), then three stages at
strides 16, 32 and 64. Every block is a residual depthwise 3x3 conv-BN, (from stage 2 on)
residual single-head attention on the first ``partial_dim`` channels only (GroupNorm(1),
one conv-BN for q, k (16 channels each) and v, softmax over all tokens, ReLU - conv-BN on
all channels), and a residual conv FFN (ratio 2). Between stages: a conv + FFN pair, an
inverted-residual patch merging with squeeze-excite, and another conv + FFN pair.

How this module relates to timm. timm registers ``shvit_s1``...``shvit_s4`` with converted
weights (``timm/shvit_s*.in1k``) but its ``checkpoint_filter_fn`` is a passthrough, so the
official release files (``blocks1/2/3`` layout) do not load. The model itself is right
(timm's module tree and forward equal the official code's, checked with the parity
fixture), so it is not re-implemented: :class:`SHViT` subclasses timm's class and adds
only what is missing, and the four names are registered again here, replacing timm's
entrypoints when ``zoo`` is imported (timm's overwrite warning is silenced for exactly
these names). timm's tag ``in1k`` (timm's hub copy) stays registered with timm's values
and stays the default, so timm code sees the same cfgs and weights. What the zoo adds:

- ``checkpoint_filter_fn`` converts the official layout (and passes timm's through, so the
  ``in1k`` tag loads timm's copy into this model); 1x1 conv weights stored 2-D are reshaped.
- the tag ``official_in1k`` beside timm's, pointing at the official GitHub release files
  (its ``notes`` say where each value comes from);
- input validation (``zoo.layers.validate_input``: channels, dtype, NaN, at least 64x64);
- ``forward_intermediates`` with ``NHWC`` output, and ``features_only`` through it.

Any input size already works in timm's model (no windows; every stride-2 conv pads by one,
so a side of n gives ceil(n / 2)); the minimum is one pixel at stride 64.

Differences from timm's registration: the added tag ``official_in1k`` (official host) next
to ``in1k`` (timm's hub copy); ``features_only`` returns the same three maps.
The official detection backbone (SHViT-S4) uses the outputs of the three stages as they
are (no extra norms) with an EfficientViT-style FPN neck (``necks/efficientvit_fpn.py``).
"""
from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model
from timm.models import shvit as timm_shvit
from timm.models.shvit import SHViT as TimmSHViT

from zoo.builder import build_zoo_model
from zoo.layers import validate_input
from zoo.registry import with_timm_tags
from zoo.staged import FeatureIntermediates

__all__ = ['SHViT', 'checkpoint_filter_fn']


class SHViT(FeatureIntermediates, TimmSHViT):
    """timm's SHViT with input validation and ``NHWC`` intermediates.

    Args:
        **kwargs: timm's ``SHViT`` arguments (``embed_dim``, ``partial_dim``, ``qk_dim``,
            ``depth``, ``types``, ``in_chans``, ``num_classes``, ``global_pool``,
            ``drop_rate``).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # One output pixel at the last stride (64).
        self.min_input_size = self.feature_info[-1]['reduction']

    def _check_input(self, x: torch.Tensor) -> None:
        validate_input(x, in_chans=self.in_chans, min_size=self.min_input_size,
                       weight_dtype=self.patch_embed[0].c.weight.dtype, name='SHViT')

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem of the shared forward_intermediates (zoo.staged.FeatureIntermediates)."""
        self._check_input(x)
        return self.patch_embed(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return super().forward_features(x)


def _official_key(key: str) -> str:
    """``blocks{n}.{j}.*`` (official) -> ``stages.{n-1}.downsample|blocks.*`` (timm)."""
    m = re.match(r'^blocks(\d)\.(\d+)\.(.*)$', key)
    if m is None:
        return key
    stage, j, rest = int(m[1]) - 1, int(m[2]), m[3]
    if stage == 0:  # the first stage has no downsampling
        return f'stages.0.blocks.{j}.{rest}'
    # Later stages start with three downsampling entries: a (conv, FFN) pair, the patch
    # merging, another (conv, FFN) pair; timm flattens them into downsample.0..4.
    if j == 0 or j == 2:
        sub, rest = rest.split('.', 1)
        return f'stages.{stage}.downsample.{j + int(sub) + (1 if j == 2 else 0)}.{rest}'
    if j == 1:
        return f'stages.{stage}.downsample.2.{rest}'
    return f'stages.{stage}.blocks.{j - 3}.{rest}'


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Convert an official SHViT checkpoint (``blocks1/2/3``) to timm's layout.

    timm-layout files (``stages.*``) pass through. 1x1 conv weights stored as 2-D matrices
    (as some exported files do) are reshaped to the model's 4-D shape.
    """
    state_dict = state_dict.get('model', state_dict)
    targets = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        key = _official_key(key)
        target = targets.get(key)
        if (target is not None and target.ndim == 4 and value.ndim == 2
                and target.shape[2:] == (1, 1) and tuple(value.shape) == tuple(target.shape[:2])):
            value = value.reshape(target.shape)
        out[key] = value
    return out


def _create_shvit(variant: str, pretrained: bool = False, **kwargs: Any) -> SHViT:
    return build_zoo_model(
        SHViT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2), feature_cls='getter'),
        **kwargs,
    )


def _cfg(variant: str, **kwargs: Any) -> dict[str, Any]:
    # The official evaluation (DeiT-style): resize to 256/224 of the input size, centre crop,
    # bicubic, ImageNet mean/std.
    return {
        'url': f'https://github.com/ysj9909/SHViT/releases/download/v1.0/{variant}.pth',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (4, 4),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.0.c', 'classifier': 'head.l',
        'license': 'mit', 'paper_ids': 'arXiv:2401.16456',
        'paper_name': 'SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design',
        'origin_url': 'https://github.com/ysj9909/SHViT',
        'notes': (
            'url: the official GitHub release v1.0 (official layout, converted on load by '
            'backbones.shvit.checkpoint_filter_fn); timm\'s in1k tag is timm\'s hub copy in timm\'s layout',
            'input_size, crop_pct 0.875, bicubic, ImageNet mean/std: the official DeiT-style evaluation '
            '(resize to 256/224 of the input size, centre crop); 256x256 for S4 as in the paper',
            'license: MIT, the official repository',
        ),
        **kwargs,
    }


# timm's in1k tags stay first (the default, timm's values); official_in1k sits beside them.
default_cfgs = with_timm_tags(timm_shvit, ['shvit_s1', 'shvit_s2', 'shvit_s3', 'shvit_s4'], {
    'shvit_s1.official_in1k': _cfg('shvit_s1'),
    'shvit_s2.official_in1k': _cfg('shvit_s2'),
    'shvit_s3.official_in1k': _cfg('shvit_s3'),
    'shvit_s4.official_in1k': _cfg('shvit_s4', input_size=(3, 256, 256)),
})

# These names are timm's: registering them again replaces timm's entrypoints on purpose.
with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'Overwriting shvit_s\d in registry')

    @register_model
    def shvit_s1(pretrained: bool = False, **kwargs: Any) -> SHViT:
        """SHViT-S1: 6.33M params, 72.8% top-1."""
        args = dict(embed_dim=(128, 224, 320), depth=(2, 4, 5), partial_dim=(32, 48, 68), types=('i', 's', 's'))
        return _create_shvit('shvit_s1', pretrained, **dict(args, **kwargs))

    @register_model
    def shvit_s2(pretrained: bool = False, **kwargs: Any) -> SHViT:
        """SHViT-S2: 11.48M params, 75.2% top-1."""
        args = dict(embed_dim=(128, 308, 448), depth=(2, 4, 5), partial_dim=(32, 66, 96), types=('i', 's', 's'))
        return _create_shvit('shvit_s2', pretrained, **dict(args, **kwargs))

    @register_model
    def shvit_s3(pretrained: bool = False, **kwargs: Any) -> SHViT:
        """SHViT-S3: 14.25M params, 77.4% top-1."""
        args = dict(embed_dim=(192, 352, 448), depth=(3, 5, 5), partial_dim=(48, 75, 96), types=('i', 's', 's'))
        return _create_shvit('shvit_s3', pretrained, **dict(args, **kwargs))

    @register_model
    def shvit_s4(pretrained: bool = False, **kwargs: Any) -> SHViT:
        """SHViT-S4: 16.59M params, 79.4% top-1 at 256x256."""
        args = dict(embed_dim=(224, 336, 448), depth=(4, 7, 6), partial_dim=(48, 72, 96), types=('i', 's', 's'))
        return _create_shvit('shvit_s4', pretrained, **dict(args, **kwargs))

"""VAN: Visual Attention Network

Paper: `Visual Attention Network` - https://arxiv.org/abs/2202.09741 (Guo et al., CVMJ 2023)
Official code: https://github.com/Visual-Attention-Network/VAN-Classification (Apache-2.0,
"for commercial use, please contact the authors"); dense prediction:
https://github.com/Visual-Attention-Network/VAN-Segmentation

Large kernel attention (LKA) decomposes a 21x21 convolution into a 5x5 depthwise conv, a
7x7 depthwise conv with dilation 3 and a 1x1 conv, and uses the result as an elementwise
gate. Convolutions only, so any input size works.

Differences from the official code, none of which changes the outputs:
- timm-style module layout (``stages.{i}.downsample/blocks/norm``); ``checkpoint_filter_fn``
  converts official files on load.
- Each stage's token LayerNorm runs on NCHW maps (timm ``LayerNorm2d``) instead of
  flattening to tokens and back.
- Its eps is a constructor argument: classification checkpoints used 1e-6, the official
  segmentation backbone ``nn.LayerNorm`` defaults (1e-5).
- A training step on channels-last maps (the default) computes the MLP's last 1x1 conv as a
  linear over channels through ``zoo.layers.linear_of_recomputed``: it keeps the GELU's input
  only and remakes the GELU in the backward, one hidden-width map fewer per block.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, LayerScale2d
from timm.models import register_model, generate_default_cfgs

from zoo.builder import build_zoo_model
from zoo.checkpoint import rename_keys
from zoo.layers import batchnorm_affine, fold_affine_into_conv_input, linear_of_recomputed, scale_conv_output
from zoo.layers.tracing import is_capturing
from zoo.staged import Stage, StagedModel, check_global_pool, init_trunc_normal

__all__ = ['VAN']


class LargeKernelAttention(nn.Module):
    """LKA: ``u * conv1x1(dw7x7_dilated3(dw5x5(u)))``, a 21x21 receptive field as a gate.

    Args:
        dim: channels.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    """1x1 conv - GELU - LKA - 1x1 conv, plus the official inner shortcut.

    Args:
        dim: channels.
        act_layer: activation after the first projection.
    """

    def __init__(self, dim: int, act_layer: Callable[..., nn.Module] = nn.GELU):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = act_layer()
        self.lka = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The shortcut inside the attention branch is part of the official block (the block
        # adds its own residual on top), so both are kept.
        return self.proj_2(self.lka(self.act(self.proj_1(x)))) + x

    def forward_without_shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.lka(self.act(self.proj_1(x))))


class DwConvMlp(nn.Module):
    """1x1 conv - depthwise 3x3 conv - GELU - 1x1 conv (the official Mlp).

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
        act_layer: activation.
        drop: dropout after the activation and after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: Callable[..., nn.Module] = nn.GELU,
                 drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(self.fc1(x))
        h_last = h.permute(0, 2, 3, 1)  # (B, H, W, hidden): a view of a channels-last map
        if (h.requires_grad and h_last.is_contiguous() and not is_capturing()
                and not (self.training and self.drop1.p > 0)):
            # fc2 (a 1x1 conv) as a linear over the channels of the channels-last map: a training
            # step keeps h only, not act(h) too; values and gradients of the plain formula.
            out = linear_of_recomputed(self.act, (h_last,), self.fc2.weight.flatten(1), self.fc2.bias)
            return self.drop2(out.permute(0, 3, 1, 2))
        return self.drop2(self.fc2(self.drop1(self.act(h))))


class VanBlock(nn.Module):
    """``x + ls1 * Attn(BN(x))``, then ``x + ls2 * Mlp(BN(x))``.

    Args:
        dim: channels.
        mlp_ratio: hidden channels of the MLP relative to ``dim``.
        drop: dropout in the MLP.
        drop_path: stochastic depth rate.
        layer_scale_init: initial value of the layer scales.
        act_layer: activation.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4., drop: float = 0., drop_path: float = 0.,
                 layer_scale_init: float = 1e-2, act_layer: Callable[..., nn.Module] = nn.GELU):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, act_layer)
        self.ls1 = LayerScale2d(dim, layer_scale_init)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = DwConvMlp(dim, int(dim * mlp_ratio), act_layer, drop)
        self.ls2 = LayerScale2d(dim, layer_scale_init)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            # x + ls1 * (attn(bn1(x)) + bn1(x)) with bn1, ls1 and the inner shortcut folded
            # away (see reparameterize): one fused multiply-add per branch.
            x = torch.addcmul(self.attn.forward_without_shortcut(x), x, self.residual_scale)
            return x + self.mlp(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BatchNorms and layer scales into the 1x1 convs for inference (called by
        ``timm.utils.reparameterize_model``). Removes 5 of the block's 10 elementwise passes;
        outputs are unchanged up to float rounding. Inference only: the BatchNorm statistics
        are frozen into the weights."""
        if self.fused:
            return
        s1, t1 = batchnorm_affine(self.norm1)
        g1 = self.ls1.gamma.detach()
        # attn(bn1(x)) = proj_2(...(proj_1(bn1(x)))) + bn1(x): fold bn1 into proj_1, ls1 into
        # proj_2, and the shortcut ls1 * bn1(x) into proj_2's bias plus a per-channel scale
        # of the residual: x + ls1 * (proj_2(...) + s1 x + t1) = proj_2'(...) + (1 + ls1 s1) x.
        fold_affine_into_conv_input(self.attn.proj_1, s1, t1)
        scale_conv_output(self.attn.proj_2, g1, g1 * t1)
        self.register_buffer('residual_scale', (1 + g1 * s1).view(1, -1, 1, 1), persistent=False)
        s2, t2 = batchnorm_affine(self.norm2)
        fold_affine_into_conv_input(self.mlp.fc1, s2, t2)
        scale_conv_output(self.mlp.fc2, self.ls2.gamma.detach())
        self.norm1, self.ls1, self.norm2, self.ls2 = nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity()
        self.drop_path1, self.drop_path2 = nn.Identity(), nn.Identity()
        self.fused = True


class OverlapPatchEmbed(nn.Module):
    """Strided conv with 'same'-style padding, then BatchNorm (stem and downsampling).

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel_size: 7 for the stem, 3 between stages.
        stride: 4 for the stem, 2 between stages.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VAN(StagedModel):
    """Visual Attention Network.

    Args:
        in_chans: input channels.
        num_classes: classes of the linear head (0 for none).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        embed_dims: channels per stage.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        drop_rate: dropout before the head and inside the MLPs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        layer_scale_init: initial value of the layer scales (official: 1e-2).
        norm_eps: eps of the stage LayerNorms (1e-6 in the classification checkpoints, 1e-5
            in the official segmentation backbone).
        act_layer: activation.
        channels_last: run the convolutions on channels-last tensors (faster on CPU for the
            depthwise and dilated depthwise convs of LKA: see the model card); the outputs are
            the same NCHW tensors either way.
    """
    group_matcher_last = r'^stages\.(\d+)\.norm'

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: tuple[int, ...] = (64, 128, 320, 512),
            depths: tuple[int, ...] = (3, 3, 12, 3),
            mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            layer_scale_init: float = 1e-2,
            norm_eps: float = 1e-6,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            channels_last: bool = True,
    ):
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(mlp_ratios)):
            raise ValueError('embed_dims, depths and mlp_ratios need one entry per stage')
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.drop_rate = drop_rate
        self.channels_last = channels_last
        self.min_input_size = 2 ** (len(depths) + 1)  # one output pixel at the last stride

        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        stages = []
        self.feature_info = []
        in_chs, reduction = in_chans, 1
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            kernel_size, stride = (7, 4) if i == 0 else (3, 2)
            reduction *= stride
            # Patch embedding, blocks, then the stage's LayerNorm (its output feeds the next stage).
            stages.append(Stage(
                depth, lambda j, dp: VanBlock(dim, mlp_ratios[i], drop_rate, dp, layer_scale_init, act_layer),
                drop_path=dpr[i], downsample=OverlapPatchEmbed(in_chs, dim, kernel_size, stride),
                norm=LayerNorm2d(dim, eps=norm_eps)))
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f'stages.{i}'))
            in_chs = dim
        self.stages = nn.Sequential(*stages)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # As the official code: fan-out normal for convs, truncated normal for the head.
        init_trunc_normal(m)
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: VAN) -> dict[str, torch.Tensor]:
    """Convert an official VAN checkpoint (``patch_embed{i}``, ``block{i}``, ``norm{i}``) to ours."""
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict  # already in our layout (e.g. from tools/convert_checkpoint.py)
    rules = [
        (r'^patch_embed(\d)\.', lambda m: f'stages.{int(m[1]) - 1}.downsample.'),
        (r'^block(\d)\.', lambda m: f'stages.{int(m[1]) - 1}.blocks.'),
        (r'^norm(\d)\.', lambda m: f'stages.{int(m[1]) - 1}.norm.'),
        (r'\.attn\.spatial_gating_unit\.', lambda m: '.attn.lka.'),
        (r'\.layer_scale_1$', lambda m: '.ls1.gamma'),
        (r'\.layer_scale_2$', lambda m: '.ls2.gamma'),
        (r'\.mlp\.dwconv\.dwconv\.', lambda m: '.mlp.dwconv.'),
    ]
    return rename_keys(state_dict, rules)


def _create_van(variant: str, pretrained: bool = False, **kwargs: Any) -> VAN:
    return build_zoo_model(
        VAN, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # The official training and evaluation used mean = std = 0.5 (timm 0.4.12's defaults for
    # this repo's models), crop 0.9 and bicubic resizing.
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic',
        'mean': (0.5, 0.5, 0.5), 'std': (0.5, 0.5, 0.5),
        'first_conv': 'stages.0.downsample.proj', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2202.09741',
        'paper_name': 'Visual Attention Network',
        'origin_url': 'https://github.com/Visual-Attention-Network/VAN-Classification',
        **kwargs,
    }


_HF = 'Visual-Attention-Network/VAN-{}-original'
_TSINGHUA = 'https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/files/?p=%2F{}&dl=1'

default_cfgs = generate_default_cfgs({
    'van_b0.official_in1k': _cfg(hf_hub_id=_HF.format('Tiny'), hf_hub_filename='van_tiny_754.pth.tar'),
    'van_b1.official_in1k': _cfg(hf_hub_id=_HF.format('Small'), hf_hub_filename='van_small_811.pth.tar'),
    'van_b2.official_in1k': _cfg(hf_hub_id=_HF.format('Base'), hf_hub_filename='van_base_828.pth.tar'),
    'van_b3.official_in1k': _cfg(hf_hub_id=_HF.format('Large'), hf_hub_filename='van_large_839.pth.tar'),
    # B4-B6: the files the official segmentation configs start from. Their heads were not
    # checked here (no download possible); an ImageNet-22K head (21841 classes) is assumed and
    # a different one fails with the mismatched keys named.
    'van_b4.official_in1k': _cfg(url=_TSINGHUA.format('van_b4.pth'),
                                 origin_url='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/'),
    'van_b4.official_in22k': _cfg(url=_TSINGHUA.format('van_b4_22k.pth'), num_classes=21841,
                                  origin_url='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/'),
    'van_b5.official_in22k': _cfg(url=_TSINGHUA.format('van_b5_22k.pth'), num_classes=21841,
                                  origin_url='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/'),
    'van_b6.official_in22k': _cfg(url=_TSINGHUA.format('van_b6_22k.pth'), num_classes=21841,
                                  origin_url='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/'),
})


@register_model
def van_b0(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B0 (VAN-Tiny): 4.1M params, 75.4% top-1."""
    args = dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b0', pretrained, **dict(args, **kwargs))


@register_model
def van_b1(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B1 (VAN-Small): 13.9M params, 81.1% top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b1', pretrained, **dict(args, **kwargs))


@register_model
def van_b2(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B2 (VAN-Base): 26.6M params, 82.8% top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b2', pretrained, **dict(args, **kwargs))


@register_model
def van_b3(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B3 (VAN-Large): 44.8M params, 83.9% top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b3', pretrained, **dict(args, **kwargs))


@register_model
def van_b4(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B4: 60.3M params, 84.2% top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b4', pretrained, **dict(args, **kwargs))


@register_model
def van_b5(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B5: 90.0M params, ImageNet-22K pre-training."""
    args = dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b5', pretrained, **dict(args, **kwargs))


@register_model
def van_b6(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B6: 199.8M params, ImageNet-22K pre-training."""
    args = dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6), mlp_ratios=(8, 8, 4, 4))
    return _create_van('van_b6', pretrained, **dict(args, **kwargs))

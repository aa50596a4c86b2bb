"""RAVLT: Rank-Augmented Vision Linear Transformer

Paper: `Breaking the Low-Rank Dilemma of Linear Attention` - https://arxiv.org/abs/2411.07635
(Fan et al., CVPR 2025)
Official code: https://github.com/qhfan/RALA (weights: https://huggingface.co/aldjalkdf/RAVLT,
whose model card says MIT)

Rank-augmented linear attention (RALA) reweights the keys by a softmax over the keys of
``mean(q) . k`` before the usual ``phi(q) (phi(k)^T v)`` linear attention, and gates the
output with a fourth 1x1 projection. Stages 1-2 use RALA (cost linear in the number of
tokens), stages 3-4 use softmax attention, both with a 2-D RoPE (rows in the first half of
each head's channels, columns in the second) and a 5x5 depthwise LePE on the values. The
RoPE tables are computed for the feature map at hand, so any input size works without
padding.

Differences from the official code, none of which changes the outputs:
- timm-style module layout (``stem``, ``stages.{i}.downsample/blocks``, ``conv_head``,
  ``norm_head``, ``head``); ``checkpoint_filter_fn`` converts official files on load (the 4-D
  1x1-conv classifier becomes a ``Linear``, the ``(1, C, 1, 1)`` layer scales become
  ``LayerScale2d``). Downsampling sits at the start of stages 2-4 instead of the end of
  stages 1-3, so the features of a stage are the official dense backbone's outputs.
- Attention goes through ``zoo.attention``: RALA through ``linear_attention(...,
  rank_augmentation=True)``, the softmax stages through ``dense_attention`` (SDPA by
  default). The official linear branch ropes the keys after weighting them; RoPE is a
  per-token rotation, so weighting the rotated keys is the same.
- The convolutions run on channels-last tensors (``channels_last=True``), which makes the
  channel LayerNorms free of copies; outputs are the same NCHW tensors either way.
- ``num_features`` is the 1024-d projection that ``forward_head(pre_logits=True)`` returns;
  ``forward_features`` returns the last stage's map (``embed_dims[-1]`` channels).
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, LayerScale2d
from timm.models import register_model, generate_default_cfgs

from zoo.attention import dense_attention, linear_attention
from zoo.builder import build_zoo_model
from zoo.checkpoint import rename_keys
from zoo.layers import PointwiseConv2d, apply_rope, rope_2d, rope_2d_frequencies
from zoo.staged import Stage, StagedModel, check_global_pool, init_trunc_normal

__all__ = ['RAVLT']


class RoPE2d(nn.Module):
    """The 2-D RoPE tables of one stage, from the checkpoint's ``angle`` buffer.

    Args:
        head_dim: channels per head (a multiple of 4).
    """

    def __init__(self, head_dim: int):
        super().__init__()
        self.register_buffer('angle', rope_2d_frequencies(head_dim))

    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_2d(self.angle, height, width)


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1``. Without autograd as ``exp(min(x, 0)) + max(x, 0)`` (the same values;
    torch's CPU ELU forward is slow); with autograd through ``F.elu``, whose backward is one
    fused kernel where the clamp form's is several masked ones."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.elu(x) + 1
    return x.clamp(max=0).exp() + x.clamp(min=0)


class RavltAttention(nn.Module):
    """Gated attention with RoPE and LePE: RALA (``linear=True``) or softmax attention.

    ``qkvo`` projects to q, k, v and an output gate o; the result is
    ``proj((attn + lepe(v)) * o)``.

    Args:
        dim: channels.
        num_heads: attention heads.
        linear: rank-augmented linear attention (stages 1-2) instead of softmax attention.
    """

    def __init__(self, dim: int, num_heads: int, linear: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.linear = linear
        self.qkvo = PointwiseConv2d(dim, dim * 4)
        self.lepe = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj = PointwiseConv2d(dim, dim)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # channel index = (which * heads + head) * head_dim + d, as the official rearrange; on a
        # channels-last map this is a view. v (for LePE) and the gate o are taken from the same
        # token view too, so their gradients reach qkvo in one layout (slices of the NCHW map
        # beside the token view made autograd add gradients of two layouts).
        tokens = self.qkvo(x).permute(0, 2, 3, 1).reshape(B, H * W, 4, self.num_heads, self.head_dim)

        def as_map(t: torch.Tensor) -> torch.Tensor:  # (B, N, heads, head_dim) -> (B, C, H, W)
            return t.reshape(B, H, W, C).permute(0, 3, 1, 2)

        lepe = self.lepe(as_map(tokens[:, :, 2]))
        if self.linear:
            qk = _elu_plus_one(tokens[:, :, :2])  # on the channels-last slab: vectorised
            q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), tokens[:, :, 2].transpose(1, 2)
            out = linear_attention(apply_rope(q, sin, cos), apply_rope(k, sin, cos), v, q_norm=q, k_norm=k,
                                   rank_augmentation=True)
        else:
            q, k, v = (tokens[:, :, i].transpose(1, 2) for i in range(3))  # (B, heads, N, head_dim)
            out = dense_attention(apply_rope(q, sin, cos), apply_rope(k, sin, cos), v)
        out = out.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
        return self.proj((out + lepe) * as_map(tokens[:, :, 3]))


class ConvFfn(nn.Module):
    """1x1 conv - GELU - depthwise 3x3 conv with a residual - 1x1 conv.

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
        act_layer: activation.
        drop: dropout after the activation and after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: Callable[..., nn.Module] = nn.GELU,
                 drop: float = 0.):
        super().__init__()
        self.fc1 = PointwiseConv2d(dim, hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.fc2 = PointwiseConv2d(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        x = x + self.dwconv(x)
        return self.drop2(self.fc2(x))


class RavltBlock(nn.Module):
    """``x + pos(x)``, then ``x + ls1 * Attn(LN(x))``, then ``x + ls2 * FFN(LN(x))``.

    Args:
        dim: channels.
        num_heads: attention heads.
        linear: RALA instead of softmax attention.
        mlp_ratio: FFN hidden channels relative to ``dim``.
        drop_path: stochastic depth rate.
        layer_scale_init: initial value of the layer scales.
        drop: dropout in the FFN.
    """

    def __init__(self, dim: int, num_heads: int, linear: bool, mlp_ratio: float = 3.5, drop_path: float = 0.,
                 layer_scale_init: float = 1., drop: float = 0.):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = RavltAttention(dim, num_heads, linear)
        self.ls1 = LayerScale2d(dim, layer_scale_init)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.mlp = ConvFfn(dim, int(mlp_ratio * dim), drop=drop)
        self.ls2 = LayerScale2d(dim, layer_scale_init)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), sin, cos)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class Downsample(nn.Module):
    """Conv 3x3 stride 2 - BatchNorm between stages.

    Args:
        in_chs: input channels.
        out_chs: output channels.
    """

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class RAVLT(StagedModel):
    """Rank-Augmented Vision Linear Transformer.

    Args:
        in_chans: input channels.
        num_classes: classes of the head (0 for none).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        embed_dims: channels per stage.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        linear_stages: per stage, RALA (True) or softmax attention (False); official:
            linear in stages 1-2.
        mlp_ratio: FFN expansion.
        layer_scale_init: initial layer scales, one value or one per stage.
        head_hidden_size: channels of the 1x1-conv projection before pooling (official 1024).
        drop_rate: dropout before the classifier and inside the FFNs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        channels_last: run on channels-last tensors (faster on CPU); outputs are NCHW either way.
    """
    head_modules = ('conv_head', 'norm_head')  # the head projection only feeds the classifier
    group_matcher_stem = r'^stem'
    group_matcher_last = r'^conv_head|^norm_head'

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: tuple[int, ...] = (64, 128, 256, 512),
            depths: tuple[int, ...] = (2, 2, 6, 2),
            num_heads: tuple[int, ...] = (1, 2, 4, 8),
            linear_stages: tuple[bool, ...] = (True, True, False, False),
            mlp_ratio: float = 3.5,
            layer_scale_init: float | tuple[float, ...] = 1.,
            head_hidden_size: int = 1024,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            channels_last: bool = True,
    ):
        super().__init__()
        num_stages = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(linear_stages) == num_stages):
            raise ValueError('embed_dims, depths, num_heads and linear_stages need one entry per stage')
        if isinstance(layer_scale_init, (int, float)):
            layer_scale_init = (float(layer_scale_init),) * num_stages
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = head_hidden_size
        self.drop_rate = drop_rate
        self.channels_last = channels_last
        self.min_input_size = 2 ** (num_stages + 1)  # one output pixel at the last stride

        stem_chs = embed_dims[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, stride=2, padding=1), nn.BatchNorm2d(stem_chs), nn.GELU(),
            nn.Conv2d(stem_chs, stem_chs, 3, padding=1), nn.BatchNorm2d(stem_chs), nn.GELU(),
            nn.Conv2d(stem_chs, stem_chs, 3, padding=1), nn.BatchNorm2d(stem_chs), nn.GELU(),
            nn.Conv2d(stem_chs, embed_dims[0], 3, stride=2, padding=1), nn.BatchNorm2d(embed_dims[0]),
        )
        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        stages = []
        self.feature_info = []
        in_chs, reduction = embed_dims[0], 4
        for i in range(num_stages):
            reduction *= 2 if i > 0 else 1
            # Optional downsampling, then blocks sharing one set of RoPE tables.
            dim = embed_dims[i]
            stages.append(Stage(
                depths[i], lambda j, dp: RavltBlock(dim, num_heads[i], linear_stages[i], mlp_ratio, dp,
                                                    layer_scale_init[i], drop_rate),
                drop_path=dpr[i], downsample=Downsample(in_chs, dim) if i > 0 else None,
                rope=RoPE2d(dim // num_heads[i])))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f'stages.{i}'))
            in_chs = embed_dims[i]
        self.stages = nn.Sequential(*stages)
        self.conv_head = PointwiseConv2d(embed_dims[-1], head_hidden_size)
        self.norm_head = nn.BatchNorm2d(head_hidden_size)
        self.act_head = nn.SiLU()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        # As the official code: truncated normal (std 0.02) for convs and the classifier.
        self.apply(partial(init_trunc_normal, types=(nn.Conv2d, nn.Linear)))

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act_head(self.norm_head(self.conv_head(x)))
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        if pre_logits:
            return x
        if x.ndim == 4:  # no pooling: classify every position
            return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: RAVLT) -> dict[str, torch.Tensor]:
    """Convert an official RAVLT checkpoint (``patch_embed``, ``layers``, ``proj``, ``norm``) to ours."""
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict  # already in our layout (e.g. from tools/convert_checkpoint.py)

    def stage_of_downsample(m: re.Match) -> str:
        # the official stage i ends with the downsampling that starts our stage i + 1
        return f'stages.{int(m[1]) + 1}.downsample.'

    rules = [
        (r'^patch_embed\.proj\.', lambda m: 'stem.'),
        (r'^layers\.(\d+)\.downsample\.reduction\.', lambda m: stage_of_downsample(m) + 'conv.'),
        (r'^layers\.(\d+)\.downsample\.norm\.', lambda m: stage_of_downsample(m) + 'norm.'),
        (r'^layers\.(\d+)\.RoPE\.', lambda m: f'stages.{m[1]}.rope.'),
        (r'^layers\.(\d+)\.blocks\.', lambda m: f'stages.{m[1]}.blocks.'),
        (r'\.norm([12])\.norm\.', lambda m: f'.norm{m[1]}.'),
        (r'\.gamma_([12])$', lambda m: f'.ls{m[1]}.gamma'),
        (r'\.ffn\.', lambda m: '.mlp.'),
        (r'^proj\.', lambda m: 'conv_head.'),
        (r'^norm\.', lambda m: 'norm_head.'),
    ]
    out = rename_keys(state_dict, rules)
    for key, value in out.items():
        # layer scales are stored (C, 1, 1) and the classifier as a 1x1 conv
        if key.endswith(('.ls1.gamma', '.ls2.gamma')):
            out[key] = value.flatten()
        elif key == 'head.weight' and value.ndim == 4:
            out[key] = value.flatten(1)
    return out


def _create_ravlt(variant: str, pretrained: bool = False, **kwargs: Any) -> RAVLT:
    return build_zoo_model(
        RAVLT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # The official evaluation: 256 -> 224 bicubic resize and crop (0.875) with ImageNet
    # mean/std; the default cfg attached to the official models (timm's _cfg, crop 0.9,
    # mean/std 0.5 in some copies) is not what the models were evaluated with.
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'stem.0', 'classifier': 'head',
        'license': 'mit', 'paper_ids': 'arXiv:2411.07635',
        'paper_name': 'Breaking the Low-Rank Dilemma of Linear Attention',
        'origin_url': 'https://github.com/qhfan/RALA',
        **kwargs,
    }


_HF = 'aldjalkdf/RAVLT'

default_cfgs = generate_default_cfgs({
    'ravlt_tiny.official_in1k': _cfg(hf_hub_id=_HF, hf_hub_filename='RAVLT_T.pth'),
    'ravlt_small.official_in1k': _cfg(hf_hub_id=_HF, hf_hub_filename='RAVLT_S.pth'),
    'ravlt_base.official_in1k': _cfg(hf_hub_id=_HF, hf_hub_filename='RAVLT_B.pth'),
    'ravlt_large.official_in1k': _cfg(hf_hub_id=_HF, hf_hub_filename='RAVLT_L.pth'),
})


@register_model
def ravlt_tiny(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-T: 14.9M params."""
    args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), layer_scale_init=1.)
    return _create_ravlt('ravlt_tiny', pretrained, **dict(args, **kwargs))


@register_model
def ravlt_small(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-S: 25.6M params, 84.4% top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8), layer_scale_init=1.)
    return _create_ravlt('ravlt_small', pretrained, **dict(args, **kwargs))


@register_model
def ravlt_base(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-B: 48.2M params."""
    args = dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
                layer_scale_init=(1., 1., 1e-6, 1e-6))
    return _create_ravlt('ravlt_base', pretrained, **dict(args, **kwargs))


@register_model
def ravlt_large(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-L: 95.2M params."""
    args = dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10),
                layer_scale_init=1e-6)
    return _create_ravlt('ravlt_large', pretrained, **dict(args, **kwargs))

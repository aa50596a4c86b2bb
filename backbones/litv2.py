"""LITv2: Fast Vision Transformers with HiLo Attention

Paper: `Fast Vision Transformers with HiLo Attention` - https://arxiv.org/abs/2205.13213
(Pan, Cai and Zhuang, NeurIPS 2022)
Official code: https://github.com/ziplab/LITv2 (Apache-2.0)

Four stages. Stages 1-2 hold MLP-only blocks (``x + DWMlp(LN(x))``, the MLP has a depthwise
3x3 conv between its two linear layers). Stages 3-4 add HiLo attention: of the heads, a
fraction ``alpha`` (the lo-fi heads) attend from every token to keys/values average-pooled
over ``ws x ws`` windows, the other (hi-fi) heads attend within the ``ws x ws`` windows;
stage 4 (``ws = 1``) is plain multi-head attention through the lo-fi path. Stages are joined
by deformable token merging (DTM): a 2x2 stride-2 deformable convolution (DCNv1) -
BatchNorm - GELU.

Differences from the official code, none of which changes the outputs at the sizes the
official code accepts:
- Any input size. The official classification model takes one fixed square size; like the
  official detection backbone we zero-pad the normalised tokens of each HiLo layer to a
  multiple of ``ws`` (the hi-fi windows and the lo-fi pooling see the zeros, as there) and
  crop back, the depthwise MLP conv keeps the map's real height and width, and the stem and
  the merging layers pad the bottom/right to a multiple of their stride (the official
  detection stem does the same; its merging layers drop an odd last row/column instead, so
  our maps are ``ceil(H / stride)`` like every zoo model's). ``odd_merge='floor'`` merges
  odd maps as the official dense backbones do (``floor(H / 2)``), to reproduce their outputs
  at sizes whose stage maps are odd.
- The deformable convolution is ``zoo.layers.DeformConv2dPack`` (``torchvision.ops.
  deform_conv2d``, or its exact grid_sample + matmul decomposition, used on CPU and for ONNX)
  instead of the official compiled CUDA DCNv1; same parameters and offset layout.
- Attention goes through ``zoo.attention`` (``window_attention`` for hi-fi,
  ``dense_attention`` for lo-fi; SDPA by default).
- Training keeps the MLP's depthwise-conv output but not its GELU
  (``zoo.layers.linear_of_recomputed``): one hidden-width tensor less per block.
- Tokens stay channels-last ``(B, H, W, C)`` maps; timm-style module layout with the merging
  layer at the start of stages 2-4 (``stages.{i}.downsample``, officially at the end of
  stages 1-3); ``checkpoint_filter_fn`` converts official files on load. The classification
  LayerNorm (``norm``) is applied in ``forward_head``, so stage outputs are the raw block
  outputs that the official dense backbones normalise with their own extra norms.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import register_model, generate_default_cfgs

from zoo.attention import dense_attention, window_attention
from zoo.builder import build_zoo_model
from zoo.checkpoint import rename_keys
from zoo.layers import DeformConv2dPack, crop_to, linear_of_recomputed, pad_to_multiple
from zoo.staged import Stage, StagedModel, check_global_pool, init_trunc_normal

__all__ = ['LITv2']


class DwMlp(nn.Module):
    """Linear - depthwise 3x3 conv - GELU - Linear on channels-last maps (official ``DWMlp``).

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
        act_layer: activation.
        drop: dropout after the activation and after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: Callable[..., nn.Module] = nn.GELU,
                 drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)
        # Official init: normal with std sqrt(2 / fan_out), fan_out = 3 * 3 * out / groups = 9.
        nn.init.normal_(self.dwconv.weight, 0, (2.0 / 9) ** 0.5)
        nn.init.zeros_(self.dwconv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)  # (B, H, W, hidden)
        # The channels-last tensor viewed as NCHW is channels_last-contiguous: no copy.
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if self.training and self.drop1.p > 0:
            return self.drop2(self.fc2(self.drop1(self.act(x))))
        # fc2(act(x)); a training step keeps x only
        return self.drop2(linear_of_recomputed(self.act, (x,), self.fc2.weight, self.fc2.bias))


class HiLoAttention(nn.Module):
    """HiLo attention on channels-last maps: hi-fi window heads next to lo-fi pooled heads.

    Args:
        dim: channels.
        num_heads: total heads (``head_dim = dim // num_heads``).
        window_size: ``ws``: hi-fi window and lo-fi pooling size; 1 makes every head a
            lo-fi head without pooling (plain multi-head attention).
        alpha: fraction of the heads that are lo-fi (``int(num_heads * alpha)``).
        qkv_bias: biases of the q/k/v projections.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 2, alpha: float = 0.9,
                 qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not a multiple of num_heads {num_heads}')
        self.head_dim = dim // num_heads
        self.ws = window_size
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim = self.l_heads * self.head_dim
        self.h_dim = self.h_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        if self.l_heads > 0:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        qkv = self.h_qkv(x).reshape(B, H, W, 3, self.h_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        out = window_attention(qkv[0], qkv[1], qkv[2], self.ws, scale=self.scale)  # (B, heads, H, W, d)
        return self.h_proj(out.permute(0, 2, 3, 1, 4).reshape(B, H, W, self.h_dim))

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q = self.l_q(x).reshape(B, H * W, self.l_heads, self.head_dim).transpose(1, 2)
        if self.ws > 1:
            x = F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
        kv = self.l_kv(x).reshape(B, x.shape[1] * x.shape[2], 2, self.l_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = dense_attention(q, kv[0], kv[1], scale=self.scale)  # (B, heads, N, d)
        return self.l_proj(out.transpose(1, 2).reshape(B, H, W, self.l_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.ws, channels_last=True)
        if self.h_heads == 0:
            out = self.lofi(x)
        elif self.l_heads == 0:
            out = self.hifi(x)
        else:
            out = torch.cat((self.hifi(x), self.lofi(x)), dim=-1)
        return crop_to(out, size, channels_last=True)


class LitBlock(nn.Module):
    """``x + HiLo(LN(x))`` (stages with attention), then ``x + DwMlp(LN(x))``.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: HiLo ``ws``; None for an MLP-only block (stages 1-2).
        alpha: lo-fi fraction of the heads.
        mlp_ratio: MLP expansion.
        qkv_bias: biases of the q/k/v projections.
        drop: dropout in the MLP.
        drop_path: stochastic depth rate.
        norm_layer: token norm.
        act_layer: MLP activation.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int | None, alpha: float = 0.9,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop: float = 0., drop_path: float = 0.,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
                 act_layer: Callable[..., nn.Module] = nn.GELU):
        super().__init__()
        if window_size is None:
            self.norm1 = self.attn = None
        else:
            self.norm1 = norm_layer(dim)
            self.attn = HiLoAttention(dim, num_heads, window_size, alpha, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = DwMlp(dim, int(dim * mlp_ratio), act_layer, drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


ODD_MERGE_MODES = ('pad', 'floor')


class DeformTokenMerging(nn.Module):
    """DTM: 2x2 stride-2 deformable conv - BatchNorm - GELU, on channels-last maps.

    Args:
        dim: input channels.
        out_dim: output channels.
        act_layer: activation.
        dcn_impl: deformable conv implementation (see ``zoo.layers.deform_conv2d``).
        odd_merge: what an odd height/width becomes (see ``LITv2``): ``'pad'`` zero-pads the
            bottom/right first (``ceil(H / 2)``), ``'floor'`` convolves the map as it is
            (``floor(H / 2)``, the official dense backbones).
    """

    def __init__(self, dim: int, out_dim: int, act_layer: Callable[..., nn.Module] = nn.GELU,
                 dcn_impl: str | None = None, odd_merge: str = 'pad'):
        super().__init__()
        if odd_merge not in ODD_MERGE_MODES:
            raise ValueError(f'odd_merge must be one of {ODD_MERGE_MODES}, got {odd_merge!r}')
        self.odd_merge = odd_merge
        self.dconv = DeformConv2dPack(dim, out_dim, kernel_size=2, stride=2, impl=dcn_impl)
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        if self.odd_merge == 'pad':
            x, _ = pad_to_multiple(x, 2)
        # 'floor': the unpadded stride-2 conv has no output pixel for an odd last row/column,
        # but its deformed taps still sample that row/column (the official op sees the whole map).
        return self.act(self.norm(self.dconv(x))).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """4x4 stride-4 conv, then LayerNorm; the input is padded to a multiple of 4 first.

    Args:
        in_chans: image channels.
        dim: output channels.
        patch_size: kernel and stride.
        norm_layer: token norm.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = pad_to_multiple(x, self.patch_size)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class LITv2(StagedModel):
    """LITv2 with HiLo attention.

    Args:
        in_chans: input channels.
        num_classes: classes of the linear head (0 for none).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        embed_dim: channels of stage 1 (doubled at every stage).
        depths: blocks per stage.
        num_heads: attention heads per stage (unused by the MLP-only stages).
        local_ws: HiLo window size per stage; 0 marks an MLP-only stage (official
            ``has_msa = 0``).
        alpha: fraction of lo-fi heads (official: 0.9).
        mlp_ratio: MLP expansion.
        qkv_bias: biases of the q/k/v projections.
        drop_rate: dropout before the head and inside the MLPs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        norm_layer: token norm (LayerNorm, eps 1e-5 as in the official code).
        act_layer: activation.
        dcn_impl: deformable conv of the merging layers: ``'torchvision'``,
            ``'decomposed'`` (grid_sample + matmul, exact, faster on CPU) or None (the
            ``zoo.layers.deform_conv2d`` default: the decomposition on CPU and in ONNX
            export, torchvision's kernel on other devices).
        odd_merge: what the stride-2 merging layers do with an odd height or width.
            ``'pad'`` (default) zero-pads the bottom/right row/column first, so stage maps are
            ``ceil(H / stride)`` like every zoo model's and no input pixel is left without
            an output. ``'floor'`` merges the map as it is, as the official detection and
            segmentation backbones do: the output is ``floor(H / 2)`` and the last
            row/column is only seen through the deformed taps. Identical at sizes whose
            stage maps are even (inputs that are multiples of 32); choose ``'floor'`` to
            reproduce the official dense weights' outputs at other sizes (e.g. whole-image
            segmentation at 512x683).
    """
    stage_layout = 'NHWC'  # the stages pass token grids (B, H, W, C)
    head_modules = ('norm',)  # the classification LayerNorm only feeds the head
    group_matcher_stem = r'^patch_embed'

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: tuple[int, ...] = (2, 2, 6, 2),
            num_heads: tuple[int, ...] = (3, 6, 12, 24),
            local_ws: tuple[int, ...] = (0, 0, 2, 1),
            alpha: float = 0.9,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            dcn_impl: str | None = None,
            odd_merge: str = 'pad',
    ):
        super().__init__()
        if not (len(depths) == len(num_heads) == len(local_ws)):
            raise ValueError('depths, num_heads and local_ws need one entry per stage')
        if odd_merge not in ODD_MERGE_MODES:
            raise ValueError(f'odd_merge must be one of {ODD_MERGE_MODES}, got {odd_merge!r}')
        num_stages = len(depths)
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.min_input_size = 4 * 2 ** (num_stages - 1)  # one output pixel at the last stride

        self.patch_embed = PatchEmbed(in_chans, embed_dim, 4, norm_layer)
        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        stages = []
        self.feature_info = []
        reduction = 4
        for i in range(num_stages):
            if i > 0:
                reduction *= 2
            # Deformable token merging (stages 2-4), then the stage's blocks.
            merging = DeformTokenMerging(dims[i - 1], dims[i], act_layer, dcn_impl, odd_merge) if i > 0 else None
            stages.append(Stage(
                depths[i], lambda j, dp: LitBlock(dims[i], num_heads[i], local_ws[i] or None, alpha, mlp_ratio,
                                                  qkv_bias, drop_rate, dp, norm_layer, act_layer),
                drop_path=dpr[i], downsample=merging))
            self.feature_info.append(dict(num_chs=dims[i], reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        # As the official code: truncated normal for linear layers (the MLP's depthwise conv
        # and the deformable conv initialise themselves).
        self.apply(init_trunc_normal)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1))  # LayerNorm per token, then pooling (official order)
        x = x.mean(dim=(1, 2)) if self.global_pool == 'avg' else x.permute(0, 3, 1, 2)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: LITv2) -> dict[str, torch.Tensor]:
    """Convert an official LITv2 checkpoint (``layers.{i}.blocks/downsample``) to ours."""
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict  # already in our layout
    rules = [
        (r'^layers\.(\d+)\.downsample\.norm_layer\.', lambda m: f'stages.{int(m[1]) + 1}.downsample.norm.'),
        (r'^layers\.(\d+)\.downsample\.', lambda m: f'stages.{int(m[1]) + 1}.downsample.'),
        (r'^layers\.(\d+)\.blocks\.', lambda m: f'stages.{m[1]}.blocks.'),
        (r'\.mlp\.dwconv\.dwconv\.', lambda m: '.mlp.dwconv.'),
    ]
    return rename_keys(state_dict, rules)


def _create_litv2(variant: str, pretrained: bool = False, **kwargs: Any) -> LITv2:
    return build_zoo_model(
        LITv2, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # Official evaluation: resize to 256 (= 224 / 0.875), centre crop 224, bicubic, ImageNet
    # mean/std; the 384 fine-tune resizes straight to 384 x 384 (TEST.CROP False).
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2205.13213',
        'paper_name': 'Fast Vision Transformers with HiLo Attention',
        'origin_url': 'https://github.com/ziplab/LITv2',
        **kwargs,
    }


_RELEASE = 'https://github.com/ziplab/LITv2/releases/download/v1.0/{}'

default_cfgs = generate_default_cfgs({
    'litv2_small.official_in1k': _cfg(url=_RELEASE.format('litv2_s.pth')),
    'litv2_medium.official_in1k': _cfg(url=_RELEASE.format('litv2_m.pth')),
    'litv2_base.official_in1k': _cfg(url=_RELEASE.format('litv2_b.pth')),
    'litv2_base.official_in1k_384': _cfg(url=_RELEASE.format('litv2_b_384.pth'), input_size=(3, 384, 384),
                                         pool_size=(12, 12), crop_pct=1.0),
})


@register_model
def litv2_small(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-S: 27.8M params, 3.7 GFLOPs, 82.0% top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    return _create_litv2('litv2_small', pretrained, **dict(args, **kwargs))


@register_model
def litv2_medium(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-M: 48.8M params, 7.5 GFLOPs, 83.3% top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    return _create_litv2('litv2_medium', pretrained, **dict(args, **kwargs))


@register_model
def litv2_base(pretrained: bool = False, **kwargs: Any) -> LITv2:
    """LITv2-B: 86.5M params, 13.2 GFLOPs, 83.6% top-1 (84.7% fine-tuned at 384)."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    return _create_litv2('litv2_base', pretrained, **dict(args, **kwargs))

"""BiFormer: Vision Transformer with Bi-Level Routing Attention

Paper: `BiFormer: Vision Transformer with Bi-Level Routing Attention` -
https://arxiv.org/abs/2303.08810 (Zhu et al., CVPR 2023)
Official code: https://github.com/rayleizhu/BiFormer (MIT)

Bi-level routing attention (BRA) splits a feature map into ``n_win x n_win`` regions, routes
every query region to the ``topk`` key regions whose mean key is most similar to the region's
mean query, and runs token-to-token attention over the tokens of those regions only. Stages
1-3 use BRA (topk 1, 4, 16); stage 4 is plain global attention with LePE. Every block starts
with a depthwise 3x3 conv position encoding (CPE).

Differences from the official code:
- Any input size: the official classification model needs H and W divisible by ``n_win`` at
  every stage (224 is fine, 256 and 230 fail). Here each BRA pads its (normalised) input with
  zeros to a multiple of ``n_win`` and crops its output back, exactly as the official dense
  backbones do (``auto_pad=True``), so divisible inputs give the official outputs unchanged.
- The routed attention runs through ``zoo.attention.routed_attention``: by default an SDPA
  path that gathers the selected key/value regions for a bounded block of query regions at a
  time (the official ``KVGather`` copies every selected region once per query region for the
  whole map at once: ~100 GB at 600x500 reported by users), or attends over the whole map
  under a region mask where the routing is dense; or a Triton kernel that reads the regions
  by index. Tokens are put in region-major order once, before the qkv projection, so that
  q, k and v reach it as views (no per-head permutes).
- ``n_win`` is a constructor argument (7 for classification, 16 / 8 in the official detection
  / segmentation recipes); no parameter depends on it, so one checkpoint serves them all. If
  ``n_win ** 2`` is smaller than a stage's ``topk``, all regions are used (the official code
  would fail).
- The MLPs are ``zoo.layers.Mlp`` (timm's, same keys), whose training step keeps the hidden
  pre-activation but not the GELU's output: one hidden-width tensor less per block.
- timm-style module layout (``stages.{i}.downsample``, ``stages.{i}.blocks.{j}``, the final
  BatchNorm applied in ``forward_head``); ``checkpoint_filter_fn`` converts official files.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model

from zoo.attention import dense_attention, routed_attention
from zoo.builder import build_zoo_model
from zoo.checkpoint import rename_keys
from zoo.layers import Mlp, crop_to, pad_to_multiple
from zoo.staged import Stage, StagedModel, check_global_pool, init_trunc_normal

__all__ = ['BiFormer']


class BiLevelRoutingAttention(nn.Module):
    """BRA on NHWC maps: region routing by mean q/k, then attention over the routed regions.

    Args:
        dim: channels (also the query/key width, ``qk_dim = dim`` in every official model).
        num_heads: heads of the token attention.
        n_win: regions per side.
        topk: key regions per query region.
        lepe_kernel: kernel of the depthwise LePE conv applied to V.
    """

    def __init__(self, dim: int, num_heads: int, n_win: int = 7, topk: int = 4, lepe_kernel: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        # The official scale uses the full query/key width, not the head width, both for the
        # routing logits and for the token attention.
        self.scale = dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.lepe = nn.Conv2d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n_win
        x, size = pad_to_multiple(x, n, channels_last=True)
        B, H, W, C = x.shape
        h, w = H // n, W // n
        heads, d = self.num_heads, C // self.num_heads
        # Tokens in region-major order, (B, regions, tokens per region, C): q, k and v are then
        # views whose regions the routed attention gathers whole, instead of three head/region
        # permute copies and an element-wise gather.
        x = x.reshape(B, n, h, n, w, C).transpose(2, 3).reshape(B, n * n, h * w, C)
        q, k, v = self.qkv(x).chunk(3, dim=-1)

        def to_map(t: torch.Tensor) -> torch.Tensor:  # (B, R, h*w, C) -> (B, H, W, C)
            return t.reshape(B, n, n, h, w, C).transpose(2, 3).reshape(B, H, W, C)

        lepe = self.lepe(to_map(v).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

        # Routing: region means of q and k, top-k key regions per query region (no gradient,
        # as in the official non-differentiable routing).
        # In float32 (autocast off): in float16 the region-mean logits flip top-k choices
        # that float32 and the official code make.
        autocast_off = (torch.autocast(q.device.type, enabled=False)
                        if torch.amp.is_autocast_available(q.device.type) else contextlib.nullcontext())
        with torch.no_grad(), autocast_off:
            logits = (q.float().mean(2) * self.scale) @ k.float().mean(2).transpose(-2, -1)
            region_index = torch.topk(logits, k=min(self.topk, n * n), dim=-1).indices

        def split_heads(t: torch.Tensor) -> torch.Tensor:  # (B, R, h*w, C) -> (B, heads, R, h*w, d), a view
            return t.reshape(B, n * n, h * w, heads, d).permute(0, 3, 1, 2, 4)

        out = routed_attention(split_heads(q), split_heads(k), split_heads(v), region_index, scale=self.scale)
        out = to_map(out.permute(0, 2, 3, 1, 4).reshape(B, n * n, h * w, C))
        out = self.proj(out + lepe)
        return crop_to(out, size, channels_last=True)


class GlobalAttentionLePE(nn.Module):
    """Global multi-head attention with LePE on the block input (the official stage-4 attention).

    Args:
        dim: channels.
        num_heads: heads (8 in every official model, whatever the width).
        lepe_kernel: kernel of the depthwise LePE conv, applied to the input (not to V).
    """

    def __init__(self, dim: int, num_heads: int = 8, lepe_kernel: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.lepe = nn.Conv2d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        lepe = self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = dense_attention(qkv[0], qkv[1], qkv[2])  # scale head_dim ** -0.5
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return self.proj(out + lepe)


class BiFormerBlock(nn.Module):
    """``x + CPE(x)``, then pre-norm attention and MLP residuals on NHWC tokens.

    Args:
        dim: channels.
        num_heads: heads of the routed attention.
        topk: key regions per query region; -2 selects global attention with LePE.
        n_win: regions per side.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path: stochastic depth rate.
        lepe_kernel: kernel of the LePE conv.
        cpe_kernel: kernel of the depthwise conv position encoding.
        global_heads: heads of the global attention (``topk=-2``).
        norm_eps: eps of the LayerNorms.
        drop: dropout in the MLP.
    """

    def __init__(self, dim: int, num_heads: int, topk: int, n_win: int = 7, mlp_ratio: float = 3.,
                 drop_path: float = 0., lepe_kernel: int = 5, cpe_kernel: int = 3, global_heads: int = 8,
                 norm_eps: float = 1e-6, drop: float = 0.):
        super().__init__()
        self.cpe = nn.Conv2d(dim, dim, cpe_kernel, padding=cpe_kernel // 2, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads, n_win, topk, lepe_kernel)
        elif topk == -2:
            self.attn = GlobalAttentionLePE(dim, global_heads, lepe_kernel)
        else:
            raise ValueError(f'topk must be positive (routed attention) or -2 (global attention), got {topk}')
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + self.cpe(x)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class BiFormer(StagedModel):
    """BiFormer.

    Args:
        in_chans: input channels.
        num_classes: classes of the linear head (0 for none).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        embed_dims: channels per stage.
        depths: blocks per stage.
        topks: routed key regions per stage; -2 means global attention (stage 4).
        n_win: regions per side of the routed attention (7 for classification at 224; the
            official detection / segmentation recipes use 16 / 8). No parameter depends on it.
        head_dim: channels per head of the routed attention (heads = dim / head_dim).
        global_heads: heads of the global attention stages (8 in every official model).
        mlp_ratio: MLP expansion.
        lepe_kernel: kernel of the LePE depthwise convs.
        cpe_kernel: kernel of the per-block conv position encoding.
        norm_eps: eps of the block LayerNorms.
        drop_rate: dropout before the head and in the MLPs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """
    head_modules = ('norm',)  # the BatchNorm before the classifier

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: tuple[int, ...] = (64, 128, 256, 512),
            depths: tuple[int, ...] = (2, 2, 8, 2),
            topks: tuple[int, ...] = (1, 4, 16, -2),
            n_win: int = 7,
            head_dim: int = 32,
            global_heads: int = 8,
            mlp_ratio: float = 3.,
            lepe_kernel: int = 5,
            cpe_kernel: int = 3,
            norm_eps: float = 1e-6,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(topks):
            raise ValueError('embed_dims, depths and topks need one entry per stage')
        if isinstance(n_win, bool) or not isinstance(n_win, int) or n_win < 1:
            raise ValueError(f'n_win must be a positive int, got {n_win!r}')
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        self.n_win = n_win
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.drop_rate = drop_rate
        self.min_input_size = 2 ** (len(depths) + 1)  # one output pixel at the last stride

        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        stages = []
        self.feature_info = []
        reduction = 2
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            if i == 0:
                downsample = nn.Sequential(
                    nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
                    nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim))
            else:
                downsample = nn.Sequential(
                    nn.Conv2d(embed_dims[i - 1], dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim))
            reduction *= 2
            stages.append(Stage(
                depth, lambda j, dp: BiFormerBlock(dim, dim // head_dim, topks[i], n_win, mlp_ratio, dp, lepe_kernel,
                                                   cpe_kernel, global_heads, norm_eps, drop_rate),
                drop_path=dpr[i], downsample=downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        # As the official code: truncated normal for linear layers, PyTorch defaults elsewhere.
        self.apply(init_trunc_normal)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x)
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: BiFormer) -> dict[str, torch.Tensor]:
    """Convert an official BiFormer checkpoint (``downsample_layers``, ``stages.{s}.{b}``) to ours."""
    if not any(k.startswith('downsample_layers.') for k in state_dict):
        return state_dict  # already in our layout (e.g. from tools/convert_checkpoint.py)
    rules = [
        (r'^downsample_layers\.(\d+)\.', lambda m: f'stages.{m[1]}.downsample.'),
        (r'^stages\.(\d+)\.(\d+)\.', lambda m: f'stages.{m[1]}.blocks.{m[2]}.'),
        (r'\.pos_embed\.', lambda m: '.cpe.'),
        (r'\.attn\.qkv\.qkv\.', lambda m: '.attn.qkv.'),
        (r'\.attn\.wo\.', lambda m: '.attn.proj.'),
        (r'\.mlp\.0\.', lambda m: '.mlp.fc1.'),
        (r'\.mlp\.3\.', lambda m: '.mlp.fc2.'),
    ]
    return rename_keys(state_dict, rules)


def _create_biformer(variant: str, pretrained: bool = False, **kwargs: Any) -> BiFormer:
    return build_zoo_model(
        BiFormer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # The official evaluation (main.py, DeiT-style): resize to 224 / 0.875 with bicubic
    # interpolation, center crop 224, ImageNet mean/std.
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'stages.0.downsample.0', 'classifier': 'head',
        'license': 'mit', 'paper_ids': 'arXiv:2303.08810',
        'paper_name': 'BiFormer: Vision Transformer with Bi-Level Routing Attention',
        'origin_url': 'https://github.com/rayleizhu/BiFormer',
        **kwargs,
    }


# OneDrive share links (the official README's and models/biformer.py's). OneDrive answers them
# with a sign-in/redirect page rather than the file for scripted downloads, so a failed download
# names the README, whose links open in a browser.
_ONEDRIVE = 'https://api.onedrive.com/v1.0/shares/s!{}/root/content'
_README = 'https://github.com/rayleizhu/BiFormer#imagenet-1k-trained-models'

default_cfgs = generate_default_cfgs({
    'biformer_tiny.official_in1k': _cfg(url=_ONEDRIVE.format('AkBbczdRlZvChHEOoGkgwgQzEDlM'), origin_url=_README),
    'biformer_small.official_in1k': _cfg(url=_ONEDRIVE.format('AkBbczdRlZvChHDyM-x9KWRBZ832'), origin_url=_README),
    'biformer_base.official_in1k': _cfg(url=_ONEDRIVE.format('AkBbczdRlZvChHI_XPhoadjaNxtO'), origin_url=_README),
})


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs: Any) -> BiFormer:
    """BiFormer-T: 13.1M params, 2.2 GFLOPs, 81.4% top-1."""
    args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2))
    return _create_biformer('biformer_tiny', pretrained, **dict(args, **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs: Any) -> BiFormer:
    """BiFormer-S: 25.5M params, 4.5 GFLOPs, 83.8% top-1."""
    args = dict(embed_dims=(64, 128, 256, 512), depths=(4, 4, 18, 4))
    return _create_biformer('biformer_small', pretrained, **dict(args, **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs: Any) -> BiFormer:
    """BiFormer-B: 56.8M params, 9.8 GFLOPs, 84.3% top-1."""
    args = dict(embed_dims=(96, 192, 384, 768), depths=(4, 4, 18, 4))
    return _create_biformer('biformer_base', pretrained, **dict(args, **kwargs))

"""CrossFormer and CrossFormer++: cross-scale embedding, short/long-distance attention, DPB

Papers: `CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention` -
https://arxiv.org/abs/2108.00154 (Wang et al., ICLR 2022), and `CrossFormer++: A Versatile
Vision Transformer Hinging on Cross-scale Attention` - https://arxiv.org/abs/2303.06908
(Wang et al., TPAMI 2023).
Official code: https://github.com/cheerss/CrossFormer (MIT)

The cross-scale embedding layer (CEL) concatenates strided convolutions of several kernel
sizes (4/8/16/32 in the stem, 2/4 between stages). Blocks alternate short-distance attention
(SDA: attention inside adjacent G x G groups) and long-distance attention (LDA: inside groups
of tokens sampled every I tokens), both with a dynamic position bias (DPB, an MLP on relative
coordinates). CrossFormer++ changes only configuration: per-stage group sizes and intervals
and the active cross-layer guidance (ACL: after every third block but the last of a stage,
``x = LN(DWConv3x3(x))``). One implementation serves both.

Differences from the official code:
- Any input size. The official classification model accepts only its training size. Here, as
  in the official dense backbones, every attention pads its map (bottom/right) to a multiple
  of G (LDA: G * I) and gives the padded keys a -1e6 bias, so padded tokens never change real
  tokens; when a stage is no larger than its group (``min(H, W) <= G``) the blocks attend over
  the whole stage (the ``main`` dense backbone's rule; v1's below), decided per call from the
  input size: the official dense backbone instead flips a flag of the module inside
  ``forward`` for good, so one small image turns the block's LDA into SDA for every later
  input. The official dense
  backbone pads the whole-stage group to a square ``max(H, W)``; attending over the ``H x W``
  tokens with the bias of an ``H x W`` group gives the same result without the padding. Inputs
  whose size is not a multiple of 4 (stem) or maps of odd size (merging) are zero-padded at
  the bottom/right (the official code asserts divisibility), so stage ``i`` has
  ``ceil(H / 2 ** (i + 2))`` rows.
- Group sizes and intervals are constructor arguments (no parameter depends on them): the
  official dense recipes use G = 7 and I = (8, 4, 2, 1) for CrossFormer++ as well.
- Two long-distance groupings, on the same weights (``lda_grouping``). ``'main'`` (branch
  ``main`` of the official repository, CrossFormer++ and its dense code): a group takes every
  I-th token of a ``(G*I) x (G*I)`` region, so a map holds ``I x I`` groups of ``G x G`` per
  region. ``'v1'`` (branch ``crossformer``, the original release whose dense code trained the
  published v1 detectors and segmenters): the map is padded to a multiple of I and split into
  ``I x I`` groups only, each the tokens with the same (row mod I, column mod I), spanning the
  whole map (``ceil(H / I) x ceil(W / I)`` tokens, with the DPB of that group size); on maps no
  larger than a group (``min(H, W) <= G``) v1 attends in square groups of side ``min(H, W)``
  (padded) instead of over the whole stage, again decided per call (the v1 code also stores
  that side as the block's group size for good). Both agree at 224 x 224, where every stage
  is G * I tokens wide (56, 28, 14, then 7 <= G), so a v1 group is a ``main`` group; they
  differ at dense sizes.
- The DPB bias is cached per (group size, device, dtype) in eval mode
  (``zoo.layers.DynamicPositionBias``) instead of running the MLP at every forward, and the
  grouped attention runs through ``zoo.attention.grouped_attention`` (SDPA).
- The MLPs are ``zoo.layers.Mlp`` (timm's, same keys), whose training step keeps the hidden
  pre-activation but not the GELU's output: one hidden-width tensor less per block.
- timm-style module layout (``stages.{i}.downsample`` is the CEL before stage ``i``,
  ``stages.{i}.blocks.{j}``, the final LayerNorm applied in ``forward_head``);
  ``checkpoint_filter_fn`` converts official files and drops the v1 files' non-learned
  ``attn.biases`` / ``attn.relative_position_index`` buffers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import adapt_input_conv

from zoo.attention import dense_attention
from zoo.attention.grouped import grouped_attention, strided_group_size
from zoo.builder import build_zoo_model
from zoo.checkpoint import rename_keys
from zoo.layers import Mlp, pad_to_multiple
from zoo.layers.dynamic_position_bias import DynamicPositionBias
from zoo.staged import Stage, StagedModel, check_global_pool, init_trunc_normal

__all__ = ['CrossFormer', 'LDA_GROUPINGS']

# The long-distance groupings of the official code's two branches (CrossFormer.lda_grouping).
LDA_GROUPINGS = ('main', 'v1')


def _split_dims(out_dim: int, num_kernels: int) -> list[int]:
    """Channels of each kernel of a CEL: halving per kernel, the last two equal (64 -> 32/16/8/8)."""
    return [out_dim // 2 ** (i + 1) if i < num_kernels - 1 else out_dim // 2 ** i for i in range(num_kernels)]


class CrossScaleEmbedding(nn.Module):
    """CEL: strided convs with several kernel sizes, concatenated along channels (NCHW -> NHWC).

    The stem (``norm_first=False``) is convs then LayerNorm on an image; between stages
    (``norm_first=True``) it is LayerNorm then convs on the previous stage's NHWC map.

    Args:
        in_chs: input channels.
        out_chs: output channels (split over the kernels as in ``_split_dims``).
        kernel_sizes: the kernel sizes, smallest first (it sets the stride).
        stride: the common stride (4 for the stem, 2 between stages).
        norm_first: LayerNorm on the input (merging) instead of on the output (stem).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_sizes: tuple[int, ...], stride: int, norm_first: bool):
        super().__init__()
        self.stride = stride
        self.norm_first = norm_first
        self.projs = nn.ModuleList([
            nn.Conv2d(in_chs, dim, k, stride=stride, padding=(k - stride) // 2)
            for k, dim in zip(kernel_sizes, _split_dims(out_chs, len(kernel_sizes)))])
        self.norm = nn.LayerNorm(in_chs if norm_first else out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:  # NHWC map of the previous stage
            x = self.norm(x).permute(0, 3, 1, 2)
        # Zero-pad to a multiple of the stride: every kernel then gives ceil(H / stride) rows.
        x, _ = pad_to_multiple(x, self.stride)
        x = torch.cat([proj(x) for proj in self.projs], dim=1).permute(0, 2, 3, 1)
        return x if self.norm_first else self.norm(x)


class CrossFormerAttention(nn.Module):
    """SDA or LDA with a dynamic position bias, on NHWC maps of any size.

    Args:
        dim: channels.
        num_heads: heads.
        group_size: G, tokens per group side.
        interval: I of LDA (tokens I apart form a group).
        long_distance: LDA instead of SDA.
        qkv_bias: bias of the qkv projection.
        proj_drop: dropout after the output projection.
        lda_grouping: ``'main'`` (LDA groups of G x G tokens I apart inside (G*I) x (G*I)
            regions; maps no larger than a group attend as one group) or ``'v1'`` (the
            original release: I x I groups of the tokens I apart, each spanning the whole map;
            maps no larger than a group attend in square groups of side min(H, W)). See the
            module docstring; no parameter depends on it.
    """

    def __init__(self, dim: int, num_heads: int, group_size: int = 7, interval: int = 8,
                 long_distance: bool = False, qkv_bias: bool = True, proj_drop: float = 0.,
                 lda_grouping: str = 'main'):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        for name, value in (('group_size', group_size), ('interval', interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if lda_grouping not in LDA_GROUPINGS:
            raise ValueError(f'lda_grouping must be one of {LDA_GROUPINGS}, got {lda_grouping!r}')
        self.num_heads = num_heads
        self.group_size = group_size
        self.interval = interval
        self.long_distance = long_distance
        self.lda_grouping = lda_grouping
        self.scale = (dim // num_heads) ** -0.5
        self.pos = DynamicPositionBias(dim // 16, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    # Read by zoo.export: which path a stage takes is chosen from its size (Python control
    # flow), so an ONNX graph is exported for its input size (dynamic batch only).
    onnx_size_dependent = ('each stage attends in groups or, when no larger than a group '
                           '(min(H, W) <= G), over the whole stage, chosen from the input size')

    def whole_stage(self, size: tuple[int, int]) -> bool:
        """Whether an ``H x W`` map is attended as one group (``'main'``: no larger than a group)."""
        return self.lda_grouping == 'main' and bool(min(size[0], size[1]) <= self.group_size)

    def grouping(self, size: tuple[int, int]) -> tuple[tuple[int, int], int]:
        """(group (gh, gw), interval) used for an ``H x W`` map; decided per call, no state."""
        H, W = int(size[0]), int(size[1])  # Python ints also while tracing (a static export)
        if min(H, W) <= self.group_size:
            # The official dense backbones' small-map rule: SDA over the whole stage ('main'),
            # or SDA in square groups of side min(H, W) ('v1'; it also stores that side as
            # the block's group size for later inputs, which is not copied here).
            return ((H, W) if self.lda_grouping == 'main' else (min(H, W),) * 2), 1
        if not self.long_distance:
            return (self.group_size, self.group_size), 1
        if self.lda_grouping == 'v1':
            # One region over the whole map padded to a multiple of I: I x I groups.
            return strided_group_size((H, W), self.interval), self.interval
        return (self.group_size, self.group_size), self.interval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).reshape(B, H, W, 3, heads, C // heads).permute(3, 0, 4, 1, 2, 5)
        # Which path a map takes is Python control flow on its size: a traced (ONNX) graph
        # keeps the path of each stage at the export size (see the model card).
        if self.whole_stage((H, W)):
            # One group of H x W tokens (the official dense backbone pads it to a square of
            # max(H, W) with masked keys, which gives the same result).
            bias = self.pos((H, W), dtype=q.dtype, device=q.device)
            # (a 4-D bias: SDPA's fused CPU kernel takes no 3-D mask and would fall back to math)
            x = dense_attention(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3), attn_bias=bias.unsqueeze(0),
                                scale=self.scale)
            x = x.reshape(B, heads, H, W, x.shape[-1])
        else:
            group, interval = self.grouping((H, W))
            if self.lda_grouping == 'v1' and interval > 1:
                # A v1 LDA group spans the map, so its size (and bias) follows the input size:
                # computed per call, as the official code does, rather than cached per image
                # size (an entry is heads x N x N, 13 MB per block at COCO's 800 x 1333).
                bias = self.pos.compute(group, q.device).to(q.dtype)
            else:
                bias = self.pos(group, dtype=q.dtype, device=q.device)
            x = grouped_attention(q, k, v, group, interval=interval, attn_bias=bias, scale=self.scale)
        x = x.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        kind = f'LDA, interval={self.interval}' if self.long_distance else 'SDA'
        return f'num_heads={self.num_heads}, group_size={self.group_size}, {kind}, lda_grouping={self.lda_grouping}'


class CrossFormerBlock(nn.Module):
    """Pre-norm attention and MLP residuals on NHWC tokens, then (CrossFormer++) the ACL.

    Args:
        dim: channels.
        num_heads: heads.
        group_size: G.
        interval: I (LDA only).
        long_distance: LDA instead of SDA.
        mlp_ratio: MLP hidden width relative to ``dim``.
        qkv_bias: bias of the qkv projection.
        drop: dropout after the attention projection and in the MLP.
        drop_path: stochastic depth rate.
        acl: apply ``LN(DWConv3x3(x))`` to the output (CrossFormer++'s active cross-layer
            guidance; official names ``ex_conv``/``ex_ln``).
        lda_grouping: ``'main'`` or ``'v1'`` (see ``CrossFormerAttention``).
    """

    def __init__(self, dim: int, num_heads: int, group_size: int, interval: int, long_distance: bool,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop: float = 0., drop_path: float = 0.,
                 acl: bool = False, lda_grouping: str = 'main'):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossFormerAttention(dim, num_heads, group_size, interval, long_distance, qkv_bias, drop,
                                         lda_grouping=lda_grouping)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        if acl:
            self.ex_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.ex_ln = nn.LayerNorm(dim)
        else:
            self.ex_conv = self.ex_ln = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.ex_conv is not None:
            x = self.ex_ln(self.ex_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return x


def _per_stage(value: int | tuple[int, ...], n: int, name: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n:
        raise ValueError(f'{name} needs one entry per stage ({n}), got {value!r}')
    return values


class CrossFormer(StagedModel):
    """CrossFormer / CrossFormer++.

    Args:
        in_chans: input channels.
        num_classes: classes of the linear head (0 for none).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        embed_dim: channels of the first stage (doubled at every stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        group_size: G per stage (or one int): 7 for CrossFormer, (4, 4, 14, 7) for
            CrossFormer++ classification; the official dense recipes use 7 for both. No
            parameter depends on it.
        interval: LDA interval I per stage (or one int): (8, 4, 2, 1) for CrossFormer and the
            dense recipes, (4, 2, 1, 1) for CrossFormer++ classification.
        acl: CrossFormer++'s active cross-layer guidance after every third block of a stage
            (not after the last one).
        lda_grouping: how LDA forms its groups: ``'main'`` (G x G groups of tokens I apart
            inside (G*I) x (G*I) regions; branch ``main`` of the official code, CrossFormer++)
            or ``'v1'`` (I x I groups of tokens I apart, each spanning the whole map; branch
            ``crossformer``, which trained the released v1 detection and segmentation
            weights). Both take the same weights and agree at 224 x 224; see the module
            docstring for the small-map rule that goes with each.
        patch_sizes: kernel sizes of the stem CEL (stride = the first).
        merge_sizes: kernel sizes of each merging CEL (stride 2).
        mlp_ratio: MLP expansion.
        qkv_bias: bias of the qkv projections.
        drop_rate: dropout before the head and inside the blocks.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """
    stage_layout = 'NHWC'
    head_modules = ('norm',)

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: tuple[int, ...] = (2, 2, 6, 2),
            num_heads: tuple[int, ...] = (3, 6, 12, 24),
            group_size: int | tuple[int, ...] = 7,
            interval: int | tuple[int, ...] = (8, 4, 2, 1),
            acl: bool = False,
            lda_grouping: str = 'main',
            patch_sizes: tuple[int, ...] = (4, 8, 16, 32),
            merge_sizes: tuple[int, ...] = (2, 4),
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        n = len(depths)
        num_heads = _per_stage(num_heads, n, 'num_heads')
        group_size = _per_stage(group_size, n, 'group_size')
        interval = _per_stage(interval, n, 'interval')
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        if lda_grouping not in LDA_GROUPINGS:
            raise ValueError(f'lda_grouping must be one of {LDA_GROUPINGS}, got {lda_grouping!r}')
        self.group_size = group_size
        self.interval = interval
        self.lda_grouping = lda_grouping
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.min_input_size = patch_sizes[0] * 2 ** (n - 1)  # one output pixel at the last stride

        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        stages = []
        self.feature_info = []
        reduction = patch_sizes[0]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i == 0:
                downsample = CrossScaleEmbedding(in_chans, dim, patch_sizes, patch_sizes[0], norm_first=False)
            else:
                downsample = CrossScaleEmbedding(dims[i - 1], dim, merge_sizes, 2, norm_first=True)
                reduction *= 2
            # The CEL into the stage, then its blocks: SDA at even, LDA at odd indices; NHWC out.
            stages.append(Stage(
                depth, lambda j, dp: CrossFormerBlock(
                    dim, num_heads[i], group_size[i], interval[i], long_distance=j % 2 == 1,
                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, drop_path=dp,
                    acl=acl and (j + 1) % 3 == 0 and j < depth - 1, lda_grouping=lda_grouping),
                drop_path=dpr[i], downsample=downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        # As the official code: truncated normal for linear layers, PyTorch defaults elsewhere
        # (the official code also sets the LayerNorms to PyTorch's ones and zeros).
        self.apply(init_trunc_normal)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1))  # NCHW features -> NHWC for the LayerNorm
        if self.global_pool == 'avg':
            x = x.mean(dim=(1, 2))
        else:
            x = x.permute(0, 3, 1, 2)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: CrossFormer) -> dict[str, torch.Tensor]:
    """Convert an official CrossFormer / CrossFormer++ checkpoint (``patch_embed``,
    ``layers.{s}.blocks.{b}``, ``layers.{s}.downsample`` after stage ``s``) to ours."""
    if not any(k.startswith('stages.') for k in state_dict):
        # v1 files carry the DPB's coordinate grid and index (older ones an attention mask)
        # as persistent buffers; they are recomputed here for any group size.
        dropped = ('.attn.biases', '.attn.relative_position_index', '.attn_mask')
        state_dict = rename_keys({k: v for k, v in state_dict.items() if not k.endswith(dropped)}, [
            (r'^patch_embed\.', 'stages.0.downsample.'),
            (r'^layers\.(\d+)\.downsample\.reductions\.', lambda m: f'stages.{int(m[1]) + 1}.downsample.projs.'),
            (r'^layers\.(\d+)\.downsample\.', lambda m: f'stages.{int(m[1]) + 1}.downsample.'),
            (r'^layers\.(\d+)\.blocks\.', lambda m: f'stages.{m[1]}.blocks.'),
        ])
    # The stem has four convs on the image; timm adapts the first (first_conv) to another
    # in_chans, the others are adapted here the same way.
    stem = [f'stages.0.downsample.projs.{i}.weight' for i in range(1, 4)]
    if any(k in state_dict and state_dict[k].shape[1] != model.in_chans for k in stem):
        state_dict = dict(state_dict)
        for k in stem:
            if k in state_dict:
                state_dict[k] = adapt_input_conv(model.in_chans, state_dict[k])
    return state_dict


def _create_crossformer(variant: str, pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    return build_zoo_model(
        CrossFormer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # The official evaluation (Swin's data pipeline, config.py defaults): resize to 224 / 0.875
    # with bicubic interpolation, center crop 224, ImageNet mean/std.
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        # The stem has four convs on the image: timm adapts the first for other in_chans,
        # checkpoint_filter_fn the others.
        'first_conv': 'stages.0.downsample.projs.0', 'classifier': 'head',
        'license': 'mit', 'paper_ids': 'arXiv:2108.00154',
        'paper_name': 'CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention',
        **kwargs,
        'origin_url': kwargs.get('url', 'https://github.com/cheerss/CrossFormer'),  # the page to download from
    }


def _cfg_pp(**kwargs: Any) -> dict[str, Any]:
    return _cfg(**{
        'paper_ids': 'arXiv:2303.06908',
        'paper_name': 'CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention',
        **kwargs,
    })


# Google Drive / Baidu Cloud pages (the official README's): no direct download, so
# pretrained=True fails with a message naming the page (zoo.builder.MANUAL_DOWNLOAD_HOSTS) and
# the pretrained_cfg_overlay=dict(file=...) call to use with the downloaded file.
# The v1 files are also on Baidu Cloud: links and keys in the official README
# (https://github.com/cheerss/CrossFormer#image-classification).
_GDRIVE = 'https://drive.google.com/file/d/{}/view'
_BAIDU = 'https://pan.baidu.com/s/{}?pwd=crsf'  # key crsf

default_cfgs = generate_default_cfgs({
    'crossformer_tiny.official_in1k': _cfg(url=_GDRIVE.format('1YSkU9enn-ITyrbxLH13zNcBYvWSEidfq')),
    'crossformer_small.official_in1k': _cfg(url=_GDRIVE.format('1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8')),
    'crossformer_base.official_in1k': _cfg(url=_GDRIVE.format('1bK8biVCi17nz_nkt7rBfio_kywUpllSU')),
    'crossformer_large.official_in1k': _cfg(url=_GDRIVE.format('1zRWByVW_KIZ87NgaBkDIm60DAsGJErdG')),
    'crossformer_pp_small.official_in1k': _cfg_pp(url=_BAIDU.format('1smc_kRoogd0Ig5vfqwuGTA')),
    'crossformer_pp_base.official_in1k': _cfg_pp(url=_BAIDU.format('13XVP0ebtNcyRMmkl11ALYg')),
    # The README links the same Baidu page for ++-L and ++-H.
    'crossformer_pp_large.official_in1k': _cfg_pp(url=_BAIDU.format('1xtPh-ndcOxRM7fPYYxIIRg')),
    'crossformer_pp_huge.official_in1k': _cfg_pp(url=_BAIDU.format('1xtPh-ndcOxRM7fPYYxIIRg')),
})

_PP = dict(group_size=(4, 4, 14, 7), interval=(4, 2, 1, 1), acl=True)


@register_model
def crossformer_tiny(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-T: 27.8M params, 2.9 GFLOPs, 81.5% top-1."""
    args = dict(embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16))
    return _create_crossformer('crossformer_tiny', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_small(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-S: 30.7M params, 4.9 GFLOPs, 82.5% top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    return _create_crossformer('crossformer_small', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_base(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-B: 52.0M params, 9.2 GFLOPs, 83.4% top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    return _create_crossformer('crossformer_base', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_large(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-L: 92.0M params, 16.1 GFLOPs, 84.0% top-1."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    return _create_crossformer('crossformer_large', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_pp_small(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-S: 23.3M params, 4.9 GFLOPs, 83.2% top-1."""
    args = dict(embed_dim=64, depths=(2, 2, 18, 2), num_heads=(2, 4, 8, 16), **_PP)
    return _create_crossformer('crossformer_pp_small', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_pp_base(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-B: 52.0M params, 9.5 GFLOPs, 84.2% top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), **_PP)
    return _create_crossformer('crossformer_pp_base', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_pp_large(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-L: 92.0M params, 16.6 GFLOPs, 84.7% top-1."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), **_PP)
    return _create_crossformer('crossformer_pp_large', pretrained, **dict(args, **kwargs))


@register_model
def crossformer_pp_huge(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-H: 96.0M params, 21.8 GFLOPs, 84.9% top-1."""
    args = dict(embed_dim=128, depths=(6, 6, 18, 2), num_heads=(4, 8, 16, 32), **_PP)
    return _create_crossformer('crossformer_pp_huge', pretrained, **dict(args, **kwargs))

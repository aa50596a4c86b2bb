"""LookupViT: a plain ViT whose heavy layers run on a few compressed tokens

Paper: `LookupViT: Compressing visual information to a limited number of tokens` -
https://arxiv.org/abs/2407.12753 (Koner, Jain, Jain, Tresp, Paul; ECCV 2024)
Official code: none released; no official weights. This is an implementation of the paper's
description; every choice the paper leaves open is listed in ``model_cards/lookupvit.md``.

Two token sets share one patch embedding (patch 16): the N "lookup" tokens (the full patch grid)
and M "compressed" tokens, a small grid (3x3 .. 10x10) resized bilinearly from the
position-embedded lookup grid, so the compressed tokens' position embedding is the lookup one
resampled (no extra parameters, and M can change between calls). Each block:

1. gather, MHBC lookup -> compressed: ``c += proj(A v_l)``, ``A = softmax(q_c k_l^T / sqrt(d))``;
2. the compressed tokens get a full ViT layer: ``c += MHSA(LN c)``, ``c += MLP_4(LN c)``;
3. infuse, MHBC compressed -> lookup, reusing ``A``: ``l += proj(A^T v_c)``;
4. the lookup tokens get the cheaper MLP: ``l += MLP_q(LN l)`` with ``q < 4``.

Only the M compressed tokens pay for self-attention and the wide MLP; the lookup tokens pay for
linear layers and an M x N cross-attention. The classifier takes the average of the mean compressed
token and the mean lookup token (both token sets, so the last block's infusion is not wasted).

The compressed grid is set at construction (``compressed_size``), changed on the same weights with
:meth:`LookupViT.set_compressed_size`, and, as the paper's multi-resolution training, drawn per
training batch from ``multires_sizes`` when given.

The MLPs are ``zoo.layers.Mlp`` (timm's, keeping only the hidden pre-activation for the
backward).

Dense prediction: ``forward_intermediates`` / ``features_only`` return the lookup tokens of the
selected blocks as stride-16 NCHW maps (use a simple feature pyramid, ``necks/simple_fpn.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from timm.models import register_model, generate_default_cfgs
from timm.models._manipulate import checkpoint

from zoo.attention import dense_attention, gather_attention, infuse_attention
from zoo.builder import build_zoo_model
from zoo.layers import InputError, Mlp, pad_to_multiple, validate_input
from zoo.layers.tracing import is_capturing
from zoo.plain_vit import PlainViTMixin
from zoo.staged import init_trunc_normal

__all__ = ['LookupViT']


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'expected a positive size or (height, width), got {size}')
    return size


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    B, N, C = x.shape
    return x.reshape(B, N, num_heads, C // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


class SelfAttention(nn.Module):
    """Multi-head self-attention of the compressed tokens (``zoo.attention.dense_attention``).

    Args:
        dim: channels.
        num_heads: attention heads.
        qkv_bias: biases in the qkv projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge(dense_attention(q, k, v)))


class GatherAttention(nn.Module):
    """MHBC lookup -> compressed: compressed queries attend over lookup keys/values.

    Args:
        dim: channels.
        num_heads: attention heads.
        qkv_bias: biases in the q and kv projections.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, c: torch.Tensor, lookup: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = _heads(self.q(c), self.num_heads)
        k, v = (_heads(t, self.num_heads) for t in self.kv(lookup).chunk(2, dim=-1))
        out, weights = gather_attention(q, k, v)
        return self.proj(_merge(out)), weights


class InfuseAttention(nn.Module):
    """MHBC compressed -> lookup with the gather's attention matrix reused (transposed).

    Only the values (of the refined compressed tokens) and the output projection are new.

    Args:
        dim: channels.
        num_heads: attention heads (those of the gather step).
        qkv_bias: bias in the value projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, c: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.proj(_merge(infuse_attention(weights, _heads(self.v(c), self.num_heads))))


class LookupBlock(nn.Module):
    """One LookupViT block (pre-norm residuals throughout).

    Args:
        dim: channels.
        num_heads: heads of the self- and cross-attentions.
        mlp_ratio: hidden ratio of the compressed tokens' MLP (the ViT's 4).
        lookup_mlp_ratio: hidden ratio of the lookup tokens' MLP (cheaper, < ``mlp_ratio``).
        qkv_bias: biases in the q/k/v projections.
        drop_path: stochastic depth rate of every residual branch.
        norm_eps: LayerNorm eps.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., lookup_mlp_ratio: float = .5,
                 qkv_bias: bool = True, drop_path: float = 0., norm_eps: float = 1e-6):
        super().__init__()
        self.norm_gather_c = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_gather_l = nn.LayerNorm(dim, eps=norm_eps)
        self.gather = GatherAttention(dim, num_heads, qkv_bias)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_infuse = nn.LayerNorm(dim, eps=norm_eps)
        self.infuse = InfuseAttention(dim, num_heads, qkv_bias)
        self.norm_lookup = nn.LayerNorm(dim, eps=norm_eps)
        self.lookup_mlp = Mlp(dim, int(dim * lookup_mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, c: torch.Tensor, lookup: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gathered, weights = self.gather(self.norm_gather_c(c), self.norm_gather_l(lookup))
        c = c + self.drop_path(gathered)
        c = c + self.drop_path(self.attn(self.norm1(c)))
        c = c + self.drop_path(self.mlp(self.norm2(c)))
        lookup = lookup + self.drop_path(self.infuse(self.norm_infuse(c), weights))
        lookup = lookup + self.drop_path(self.lookup_mlp(self.norm_lookup(lookup)))
        return c, lookup


def resample_grid(pos_embed: torch.Tensor, new_size: tuple[int, int], old_size: tuple[int, int]) -> torch.Tensor:
    """A ``(1, H*W, C)`` position embedding as a ``(1, C, h, w)`` map, bicubically resampled."""
    grid = pos_embed.reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2)
    if tuple(new_size) == tuple(old_size) and not is_capturing():
        return grid
    dtype = grid.dtype
    return F.interpolate(grid.float(), size=new_size, mode='bicubic', align_corners=False).to(dtype)


# What the blocks pass on: the compressed tokens, the lookup tokens, the lookup grid.
_State = tuple[torch.Tensor, torch.Tensor, tuple[int, int]]


class LookupViT(PlainViTMixin, nn.Module):
    """LookupViT: compressed tokens (full ViT layers) + lookup tokens (cheap layers).

    Args:
        img_size: the image size the position embedding is stored for; other sizes resample it.
        patch_size: patch side (lookup-token stride).
        in_chans: input channels.
        num_classes: classes of the linear head (0 for none).
        global_pool: ``'avg'`` (the average of the mean compressed token and the mean lookup token,
            so that both token sets feed the classifier) or ``''`` (no pooling).
        embed_dim: channels.
        depth: blocks.
        num_heads: attention heads.
        mlp_ratio: hidden ratio of the compressed tokens' MLP.
        lookup_mlp_ratio: hidden ratio of the lookup tokens' MLP.
        compressed_size: compressed grid side (or (h, w)); change it later with
            :meth:`set_compressed_size`.
        multires_sizes: compressed grid sides to draw from, one per training forward (the paper's
            multi-resolution training); None trains at ``compressed_size`` only. Evaluation always
            uses ``compressed_size``.
        qkv_bias: biases in the q/k/v projections.
        norm_eps: LayerNorm eps.
        drop_rate: dropout after the embedding and before the head.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        dynamic_img_size: accept any input size (pad to the patch size, resample the position
            embedding); False requires inputs of exactly ``img_size``.
    """

    def __init__(
            self,
            img_size: int | tuple[int, int] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.,
            lookup_mlp_ratio: float = .5,
            compressed_size: int | tuple[int, int] = 10,
            multires_sizes: Sequence[int] | None = None,
            qkv_bias: bool = True,
            norm_eps: float = 1e-6,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            dynamic_img_size: bool = True,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim {embed_dim} is not a multiple of num_heads {num_heads}')
        self.img_size = _pair(img_size)
        self.num_classes = num_classes
        self.global_pool = self._check_pool(global_pool)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.min_input_size = patch_size
        self.dynamic_img_size = dynamic_img_size
        self.drop_rate = drop_rate
        self.compressed_size = _pair(compressed_size)
        self.multires_sizes = None if multires_sizes is None else [_pair(s) for s in multires_sizes]
        self._active_size = self.compressed_size
        self.grad_checkpointing = False

        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList([
            LookupBlock(embed_dim, num_heads, mlp_ratio, lookup_mlp_ratio, qkv_bias, dpr[i], norm_eps)
            for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=.02)
        # ViT's: truncated normal (std 0.02) Linear weights, zero biases.
        self.apply(init_trunc_normal)

    # ------------------------------------------------------------------ compressed grid

    def set_compressed_size(self, size: int | tuple[int, int]) -> None:
        """Use a ``size`` x ``size`` (or (h, w)) compressed grid from now on; same weights."""
        self.compressed_size = self._active_size = _pair(size)

    @property
    def num_prefix_tokens(self) -> int:
        """The compressed tokens lead the ``forward_features`` sequence (like prefix tokens)."""
        return self._active_size[0] * self._active_size[1]

    def _pick_size(self) -> tuple[int, int]:
        if self.training and self.multires_sizes:
            i = int(torch.randint(len(self.multires_sizes), ()).item())
            return self.multires_sizes[i]
        return self.compressed_size

    # ------------------------------------------------------------------ timm interface

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {'pos_embed'}

    # ------------------------------------------------------------------ forward

    # The hooks of the shared forward_intermediates / forward_features (zoo.plain_vit).

    def _forward_stem(self, x: torch.Tensor) -> _State:
        """Compressed tokens (B, M, C), lookup tokens (B, N, C) and the lookup grid."""
        validate_input(x, in_chans=self.in_chans, min_size=self.min_input_size,
                       weight_dtype=self.patch_embed.weight.dtype, name='LookupViT')
        if not self.dynamic_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise InputError(f'LookupViT was built with dynamic_img_size=False for {self.img_size[0]}x'
                             f'{self.img_size[1]} inputs, got {x.shape[-2]}x{x.shape[-1]}')
        x, _ = pad_to_multiple(x, self.patch_size)
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x + resample_grid(self.pos_embed, grid, self.grid_size).to(x.dtype)
        self._active_size = self._pick_size()
        c = F.interpolate(x, size=self._active_size, mode='bilinear', align_corners=False)
        c = self.pos_drop(c.flatten(2).transpose(1, 2))
        lookup = self.pos_drop(x.flatten(2).transpose(1, 2))
        return c, lookup, grid

    def _forward_stage(self, index: int, block: LookupBlock, state: _State) -> _State:
        c, lookup, grid = state
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return *checkpoint(block, c, lookup), grid
        return *block(c, lookup), grid

    def _patch_tokens(self, state: _State) -> tuple[torch.Tensor, tuple[int, int]]:
        return state[1], state[2]  # the lookup tokens: one per patch

    def _forward_end(self, state: _State, complete: bool) -> torch.Tensor:
        """The normalised tokens ``(B, M + N, C)``: the M compressed tokens first, then the lookup ones."""
        return self.norm(torch.cat((state[0], state[1]), dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            m = self.num_prefix_tokens
            x = (x[:, :m].mean(dim=1) + x[:, m:].mean(dim=1)) / 2
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: LookupViT) -> dict[str, torch.Tensor]:
    """No official checkpoints exist; files saved from this module load as they are, with a
    position embedding of another grid (e.g. trained at 384) resampled to the model's."""
    out = dict(state_dict)
    pos = out.get('pos_embed')
    if pos is not None and pos.ndim == 3 and pos.shape != model.pos_embed.shape and pos.shape[-1] == model.embed_dim:
        side = int(round(pos.shape[1] ** 0.5))
        if side * side == pos.shape[1]:
            grid = resample_grid(pos, model.grid_size, (side, side))
            out['pos_embed'] = grid.flatten(2).transpose(1, 2)
    return out


def _create_lookupvit(variant: str, pretrained: bool = False, **kwargs: Any) -> LookupViT:
    return build_zoo_model(
        LookupViT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # features_only returns every block by default; e.g. out_indices=(11,) for a simple FPN.
        feature_cfg=dict(out_indices=tuple(range(kwargs.get('depth', 12))), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # No released weights: the single 'untrained' tag documents the evaluation setup the paper's
    # ViT baselines use (big_vision ImageNet: 224, crop 0.875, bilinear, mean/std 0.5).
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': (0.5, 0.5, 0.5), 'std': (0.5, 0.5, 0.5),
        'first_conv': 'patch_embed', 'classifier': 'head',
        'license': 'mit (this implementation, the project license; no official code or weights exist)',
        'paper_ids': 'arXiv:2407.12753',
        'paper_name': 'LookupViT: Compressing visual information to a limited number of tokens',
        'origin_url': 'https://arxiv.org/abs/2407.12753',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'lookupvit_tiny.untrained': _cfg(),
    'lookupvit_small.untrained': _cfg(),
    'lookupvit_base.untrained': _cfg(),
})


@register_model
def lookupvit_tiny(pretrained: bool = False, **kwargs: Any) -> LookupViT:
    """LookupViT-Ti/16 (ViT-Ti width/depth; our size, the paper trains B/16)."""
    args = dict(embed_dim=192, depth=12, num_heads=3)
    return _create_lookupvit('lookupvit_tiny', pretrained, **dict(args, **kwargs))


@register_model
def lookupvit_small(pretrained: bool = False, **kwargs: Any) -> LookupViT:
    """LookupViT-S/16 (ViT-S width/depth)."""
    args = dict(embed_dim=384, depth=12, num_heads=6)
    return _create_lookupvit('lookupvit_small', pretrained, **dict(args, **kwargs))


@register_model
def lookupvit_base(pretrained: bool = False, **kwargs: Any) -> LookupViT:
    """LookupViT-B/16 (ViT-B width/depth), the paper's ImageNet model."""
    args = dict(embed_dim=768, depth=12, num_heads=12)
    return _create_lookupvit('lookupvit_base', pretrained, **dict(args, **kwargs))

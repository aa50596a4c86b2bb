"""iLLaMA: a LLaMA-style (causal) decoder as a plain vision transformer

Paper: `Adapting LLaMA Decoder to Vision Transformer` - https://arxiv.org/abs/2404.06773
(Wang et al., 2024)
Official code: https://github.com/techmonsterwang/iLLaMA (no LICENSE file); weights on the
Hugging Face Hub: https://huggingface.co/techmonsterwang/iLLaMA

A ViT made of LLaMA blocks: RMSNorm (computed in float32), bias-free SwiGLU MLPs, 1-D RoPE
over the whole token sequence, and causal self-attention. The class token is appended
AFTER the patch tokens (so that, under the causal mask, it sees every patch), a learnable
absolute position embedding is added after that concatenation (its last row belongs to the
class token), and the logits come from the normalised class token.

The causal mask multiplies the softmax weights (``softmax(q k^T s) * tril``) without
renormalising the rows, which is not what ``is_causal=True`` computes. It runs through
``zoo.attention.causal_post_softmax_attention`` (exact, no N x N matrix on the fast path).
Training used a "soft mask" ``r + (1 - r) * tril`` with ``r`` decaying to 0:
``model.set_soft_mask_rate(r)`` per iteration, e.g. with :func:`soft_mask_schedule`.

Differences from the official code, none of which changes the outputs at the official sizes:
- RoPE in real arithmetic (``zoo.layers.rope``) instead of complex tensors, so the model
  exports to ONNX; the tables are computed per forward for the actual sequence length.
- Any input size: the image is zero-padded at the bottom/right to a multiple of the patch
  size, and the position embedding is resampled bicubically to the patch grid (class row
  kept last), as the official code does once when fine-tuning at 384.
- ``forward_intermediates`` / ``features_only`` return the patch tokens of the selected
  blocks as NCHW maps (class token dropped), for dense prediction; the maps are views of the
  tokens (channels-last strides), not copies.
- Training keeps one N x N tensor per block for the backward pass where the official
  autograd keeps two (the softmax, and its masked copy, which the backward remakes), and
  the SwiGLU keeps ``fc1(x)`` and ``fc3(x)`` only (``zoo.layers.swiglu_linear``: the official
  autograd also keeps ``silu(fc1(x))`` and the product).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from timm.models import register_model, generate_default_cfgs, resolve_pretrained_cfg
from timm.models._manipulate import checkpoint

from zoo.attention import causal_post_softmax_attention
from zoo.builder import build_zoo_model
from zoo.layers import InputError, apply_rope, pad_to_multiple, rope_1d, swiglu_linear, validate_input
from zoo.layers.tracing import is_capturing
from zoo.plain_vit import PlainViTMixin
from zoo.staged import init_trunc_normal

__all__ = ['ILLaMA', 'soft_mask_schedule']


class RMSNorm(nn.Module):
    """LLaMA's RMSNorm: normalise in float32, cast back, then scale.

    timm's ``RmsNorm`` computes in the input dtype; the official model upcasts, which
    matters under bf16/fp16 autocast.

    Args:
        dim: channels.
        eps: added to the mean square.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def swiglu_hidden(dim: int, mlp_ratio: float, multiple_of: int = 256) -> int:
    """LLaMA's SwiGLU width: two thirds of ``dim * mlp_ratio``, rounded up to ``multiple_of``."""
    hidden = int(2 * int(dim * mlp_ratio) / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


class SwiGLU(nn.Module):
    """``fc2(silu(fc1(x)) * fc3(x))``, all bias-free (the official names kept).

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=False)
        self.fc3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fc2(silu(fc1(x)) * fc3(x)); a training step keeps fc1(x) and fc3(x) only
        return swiglu_linear(self.fc1(x), self.fc3(x), self.fc2.weight)


class CausalAttention(nn.Module):
    """Multi-head self-attention with RoPE on q/k and iLLaMA's post-softmax causal mask.

    Args:
        dim: channels.
        num_heads: attention heads.
        qkv_bias: biases in the qkv projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not a multiple of num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], soft_rate: float) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # The official rotation runs in float32 whatever the activations' dtype.
        q = apply_rope(q.float(), *rope).type_as(v)
        k = apply_rope(k.float(), *rope).type_as(v)
        x = causal_post_softmax_attention(q, k, v, soft_rate=soft_rate, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """``x + Attn(RMSNorm(x))``, then ``x + SwiGLU(RMSNorm(x))``.

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp_hidden: SwiGLU hidden channels.
        qkv_bias: biases in the qkv projection.
        drop_path: stochastic depth rate.
        norm_eps: RMSNorm eps.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 drop_path: float = 0., norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = RMSNorm(dim, norm_eps)
        self.attn = CausalAttention(dim, num_heads, qkv_bias)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], soft_rate: float = 0.) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), rope, soft_rate))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv (the official ``patch_embed.proj``).

    Args:
        patch_size: patch side.
        in_chans: input channels.
        embed_dim: output channels.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def resample_pos_embed(pos_embed: torch.Tensor, new_size: tuple[int, int], old_size: tuple[int, int]) -> torch.Tensor:
    """Bicubically resample the patch rows of a ``(1, H*W + 1, C)`` embedding; the class row stays last.

    The official fine-tuning at 384 resampled the 224 embedding this way
    (``F.interpolate(..., mode='bicubic', align_corners=False)``, no antialiasing).
    """
    n = old_size[0] * old_size[1]
    grid, cls = pos_embed[:, :n], pos_embed[:, n:n + 1]
    dtype = grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_size, mode='bicubic', align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(dtype)
    return torch.cat((grid, cls), dim=1)


# What the blocks pass on: the tokens (class token last), the patch grid, the RoPE tables.
_State = tuple[torch.Tensor, tuple[int, int], tuple[torch.Tensor, torch.Tensor]]


class ILLaMA(PlainViTMixin, nn.Module):
    """iLLaMA: plain ViT of LLaMA blocks with a post-sequence class token.

    Args:
        img_size: the image size the position embedding is stored for (224 or 384 for the
            official weights); other sizes are resampled at run time.
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classes of the linear head (0 for none).
        global_pool: ``'token'`` (the class token, official) or ``'avg'`` (mean of the patch
            tokens) or ``''`` (no pooling in ``forward_head``).
        embed_dim: channels.
        depth: blocks.
        num_heads: attention heads.
        mlp_ratio: SwiGLU width before LLaMA's two-thirds rule and rounding.
        multiple_of: rounding of the SwiGLU width.
        qkv_bias: biases in the qkv projections (official: True).
        norm_eps: RMSNorm eps.
        rope_theta: RoPE base.
        drop_rate: dropout after the position embedding and before the head.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        soft_mask_rate: ``r`` of the soft mask ``r + (1 - r) * tril`` (0 = the causal mask of
            the released models; 1 = bidirectional). Change it with ``set_soft_mask_rate``.
        dynamic_img_size: accept any input size (pad to the patch size, resample the position
            embedding); False requires inputs of exactly ``img_size``.
    """
    GLOBAL_POOLS = ('token', 'avg', '')
    STEM_PATTERN = r'^cls_token|^pos_embed|^patch_embed'

    def __init__(
            self,
            img_size: int | tuple[int, int] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.,
            multiple_of: int = 256,
            qkv_bias: bool = True,
            norm_eps: float = 1e-6,
            rope_theta: float = 10000.,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            soft_mask_rate: float = 0.,
            dynamic_img_size: bool = True,
    ):
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes = num_classes
        self.global_pool = self._check_pool(global_pool)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1  # the class token (stored last in the sequence)
        self.num_heads = num_heads
        self.rope_theta = rope_theta
        self.drop_rate = drop_rate
        self.dynamic_img_size = dynamic_img_size
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.min_input_size = patch_size
        self.soft_mask_rate = 0.
        self.set_soft_mask_rate(soft_mask_rate)
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        hidden = swiglu_hidden(embed_dim, mlp_ratio, multiple_of)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, hidden, qkv_bias, dpr[i], norm_eps) for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = RMSNorm(embed_dim, norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        # As the official code: truncated normal (std 0.02) for every Linear, zero biases.
        self.apply(init_trunc_normal)

    # ------------------------------------------------------------------ timm interface

    def set_soft_mask_rate(self, rate: float) -> None:
        """Set ``r`` of the soft mask ``r + (1 - r) * tril`` (the official ``update_soft_mask``)."""
        rate = float(rate)
        if not 0. <= rate <= 1.:
            raise ValueError(f'soft_mask_rate must be in [0, 1], got {rate}')
        self.soft_mask_rate = rate

    update_soft_mask = set_soft_mask_rate  # the official training scripts' name

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {'pos_embed', 'cls_token'}

    # ------------------------------------------------------------------ forward

    def _check_input(self, x: torch.Tensor) -> None:
        validate_input(x, in_chans=self.in_chans, min_size=self.min_input_size,
                       weight_dtype=self.patch_embed.proj.weight.dtype, name='iLLaMA')
        if not self.dynamic_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise InputError(f'iLLaMA was built with dynamic_img_size=False for {self.img_size[0]}x'
                             f'{self.img_size[1]} inputs, got {x.shape[-2]}x{x.shape[-1]}')

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid_size and not is_capturing():
            return self.pos_embed
        return resample_pos_embed(self.pos_embed, grid, self.grid_size)

    # The hooks of the shared forward_intermediates / forward_features (zoo.plain_vit).

    def _forward_stem(self, x: torch.Tensor) -> _State:
        """Patch tokens + class token (last) + position embedding, the grid and the RoPE tables."""
        self._check_input(x)
        x, _ = pad_to_multiple(x, self.patch_size)
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((x, self.cls_token.expand(x.shape[0], -1, -1)), dim=1)
        x = self.pos_drop(x + self._pos_embed(grid))
        return x, grid, rope_1d(x.shape[1], self.embed_dim // self.num_heads, self.rope_theta, device=x.device)

    def _forward_stage(self, index: int, block: Block, state: _State) -> _State:
        x, grid, rope = state
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x, rope, self.soft_mask_rate), grid, rope
        return block(x, rope, self.soft_mask_rate), grid, rope

    def _patch_tokens(self, state: _State) -> tuple[torch.Tensor, tuple[int, int]]:
        return state[0][:, :-1], state[1]  # the class token (last) dropped

    def _forward_end(self, state: _State, complete: bool) -> torch.Tensor:
        """The normalised token sequence ``(B, N + 1, C)``, class token last."""
        return self.norm(state[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'token':
            x = x[:, -1]
        elif self.global_pool == 'avg':
            x = x[:, :-1].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


def soft_mask_schedule(rate: float, total_iters: int, cutoff_iters: int, schedule: str = 'constant') -> list[float]:
    """The official soft-mask schedule: ``r`` for the first ``cutoff_iters`` iterations, then 0.

    ``'constant'`` keeps ``rate`` until the cutoff (the official recipes: rate 1.0, cutoff at
    epoch 50 of 300), ``'linear'`` decays it linearly from ``rate`` to 0 over that span. Call
    ``model.set_soft_mask_rate(schedule[it])`` at every iteration.
    """
    if schedule not in ('constant', 'linear'):
        raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    if not 0 <= cutoff_iters <= total_iters:
        raise ValueError(f'cutoff_iters must be in [0, {total_iters}], got {cutoff_iters}')
    if schedule == 'constant':
        early = [float(rate)] * cutoff_iters
    else:
        early = torch.linspace(rate, 0, cutoff_iters, dtype=torch.float64).tolist()
    return early + [0.] * (total_iters - cutoff_iters)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ILLaMA) -> dict[str, torch.Tensor]:
    """Official checkpoints use our key names; only the position embedding may need resampling.

    A file for another resolution (e.g. the 384 fine-tunes loaded into a 224 model) has its
    patch rows resampled bicubically to the model's grid, class row kept last.
    """
    out = dict(state_dict)
    pos = out.get('pos_embed')
    if pos is not None and pos.ndim == 3 and pos.shape != model.pos_embed.shape and pos.shape[-1] == model.pos_embed.shape[-1]:
        side = math.isqrt(pos.shape[1] - 1)
        if side * side == pos.shape[1] - 1:
            out['pos_embed'] = resample_pos_embed(pos, model.grid_size, (side, side))
    return out


def _create_illama(variant: str, pretrained: bool = False, **kwargs: Any) -> ILLaMA:
    if 'img_size' not in kwargs:
        # A 384 cfg builds a 384 model, so its checkpoint loads without resampling.
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                     pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
        kwargs['img_size'] = cfg.input_size[-2:] if cfg is not None else 224
    return build_zoo_model(
        ILLaMA, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # features_only returns every block by default (the blocks are the "stages"); pick
        # e.g. out_indices=(2, 5, 8, 11) for a four-level pyramid.
        feature_cfg=dict(out_indices=tuple(range(kwargs.get('depth', 12))), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # Official evaluation (datasets.py, main.py): ImageNet mean/std, bicubic, resize 256 and
    # centre crop 224 (crop_pct 0.875); at 384 the image is warped to 384x384 (no crop).
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'unknown (the official repository has no LICENSE file)',
        'paper_ids': 'arXiv:2404.06773',
        'paper_name': 'Adapting LLaMA Decoder to Vision Transformer',
        'origin_url': 'https://github.com/techmonsterwang/iLLaMA',
        'hf_hub_id': 'techmonsterwang/iLLaMA',
        **kwargs,
    }


def _cfg384(**kwargs: Any) -> dict[str, Any]:
    return _cfg(input_size=(3, 384, 384), crop_pct=1.0, crop_mode='squash', **kwargs)


default_cfgs = generate_default_cfgs({
    'illama_tiny.official_in1k': _cfg(hf_hub_filename='illama-tiny-in1k-75.0.pth'),
    'illama_small.official_in1k': _cfg(hf_hub_filename='illama-small-in1k-79.9.pth'),
    'illama_base.official_in1k': _cfg(hf_hub_filename='illama-base-in1k-81.6.pth'),
    'illama_base.official_in1k_384': _cfg384(hf_hub_filename='illama-base-in1k-384-83.0.pth'),
    'illama_base.official_in21k_ft_in1k': _cfg(hf_hub_filename='illama-base-in21kin1k-224-83.6.pth'),
    'illama_base.official_in21k_ft_in1k_384': _cfg384(hf_hub_filename='illama-base-in21kin1k-384-85.0.pth'),
    'illama_large.official_in21k_ft_in1k': _cfg(hf_hub_filename='illama-large-in21kin1k-224-84.8.pth'),
    'illama_large.official_in21k_ft_in1k_384': _cfg384(hf_hub_filename='illama-large-in21kin1k-384-86.0.pth'),
})


@register_model
def illama_tiny(pretrained: bool = False, **kwargs: Any) -> ILLaMA:
    """iLLaMA-T: 5.7M params, 75.0% top-1."""
    args = dict(embed_dim=192, depth=12, num_heads=3)
    return _create_illama('illama_tiny', pretrained, **dict(args, **kwargs))


@register_model
def illama_small(pretrained: bool = False, **kwargs: Any) -> ILLaMA:
    """iLLaMA-S: 22.0M params, 79.9% top-1."""
    args = dict(embed_dim=384, depth=12, num_heads=6)
    return _create_illama('illama_small', pretrained, **dict(args, **kwargs))


@register_model
def illama_base(pretrained: bool = False, **kwargs: Any) -> ILLaMA:
    """iLLaMA-B: 86.5M params, 81.6% top-1 (83.0 at 384; 85.0 with ImageNet-21K, 384)."""
    args = dict(embed_dim=768, depth=12, num_heads=12)
    return _create_illama('illama_base', pretrained, **dict(args, **kwargs))


@register_model
def illama_large(pretrained: bool = False, **kwargs: Any) -> ILLaMA:
    """iLLaMA-L: 310.5M params, 84.8% top-1 with ImageNet-21K (86.0 at 384)."""
    args = dict(embed_dim=1024, depth=24, num_heads=16)
    return _create_illama('illama_large', pretrained, **dict(args, **kwargs))

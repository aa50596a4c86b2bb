"""Folding inference-time affine ops (BatchNorm, layer scale) into neighbouring convolutions.

At inference a BatchNorm is a per-channel affine map ``x * scale + shift``, and a layer
scale is a per-channel ``x * gamma``. Each costs a full pass over the activations, which
on a CPU costs about as much as a depthwise convolution. Folded into the weights of an
adjacent convolution they cost nothing. The functions here change a convolution in place
so that it computes the composed map exactly (up to float rounding), and are what the
families' ``reparameterize()`` methods use; ``timm.utils.reparameterize_model`` calls
those.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ['batchnorm_affine', 'fold_affine_into_conv_input', 'scale_conv_output', 'fold_batchnorm_after_conv',
           'fuse_conv_batchnorm', 'fuse_for_inference', 'calibrate_batchnorm_statistics']


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(x) == x * scale + shift`` per channel (eval-mode statistics)."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError('batchnorm_affine needs running statistics (track_running_stats=True)')
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _ensure_bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device, dtype=conv.weight.dtype))
    return conv.bias


@torch.no_grad()
def fold_affine_into_conv_input(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``conv(x)`` compute what ``conv(x * scale + shift)`` did (per input channel).

    Exact only without zero padding (the padded zeros would have become ``shift``), so the
    convolution must have ``padding == 0``; grouped convolutions are handled.
    """
    padded = conv.padding != 'valid' if isinstance(conv.padding, str) else any(conv.padding)
    if padded:
        raise ValueError(f'cannot fold an affine map into the input of a padded convolution ({conv})')
    if scale.shape != (conv.in_channels,) or shift.shape != (conv.in_channels,):
        raise ValueError(f'scale/shift need {conv.in_channels} entries, got {tuple(scale.shape)}/{tuple(shift.shape)}')
    w = conv.weight  # (out, in / groups, kh, kw)
    groups = conv.groups
    in_per_group = conv.in_channels // groups
    out_per_group = conv.out_channels // groups
    # the input channels that each output channel sees
    idx = (torch.arange(conv.out_channels, device=w.device) // out_per_group)[:, None] * in_per_group \
        + torch.arange(in_per_group, device=w.device)[None, :]
    bias_delta = (w * shift.to(w)[idx][:, :, None, None]).sum(dim=(1, 2, 3))
    w.mul_(scale.to(w)[idx][:, :, None, None])
    _ensure_bias(conv).add_(bias_delta)


@torch.no_grad()
def scale_conv_output(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None = None) -> None:
    """Make ``conv(x)`` compute what ``conv(x) * scale + shift`` did (per output channel)."""
    if scale.shape != (conv.out_channels,):
        raise ValueError(f'scale needs {conv.out_channels} entries, got {tuple(scale.shape)}')
    conv.weight.mul_(scale.to(conv.weight).view(-1, 1, 1, 1))
    bias = _ensure_bias(conv)
    bias.mul_(scale.to(bias))
    if shift is not None:
        bias.add_(shift.to(bias))


def fold_batchnorm_after_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make ``conv(x)`` compute what ``bn(conv(x))`` did (eval-mode statistics); ``bn`` is then
    to be replaced by ``nn.Identity`` by the caller."""
    scale_conv_output(conv, *batchnorm_affine(bn))


@torch.no_grad()
def fuse_conv_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution in a timm ``ConvNormAct``-style
    module (a ``conv`` then a ``bn`` attribute, as in timm's ByobNet/ResNet-style blocks) into
    the convolution, in place, for inference; returns how many were folded.

    A ``BatchNormAct2d`` keeps its dropout and activation (they run after the folded conv).
    Eval-mode statistics are frozen into the weights: do not train the result.
    """
    folded = 0
    for module in model.modules():
        conv, bn = getattr(module, 'conv', None), getattr(module, 'bn', None)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        fold_batchnorm_after_conv(conv, bn)
        after = [m for m in (getattr(bn, 'drop', None), getattr(bn, 'act', None)) if m is not None]
        module.bn = nn.Sequential(*after) if after else nn.Identity()
        folded += 1
    return folded


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Everything above, in place: ``timm.utils.reparameterize_model`` (the modules' own
    ``fuse``/``reparameterize``, e.g. VAN's blocks), then :func:`fuse_conv_batchnorm` for the
    conv + BatchNorm pairs left (e.g. timm's HaloNet blocks). Returns ``model`` in eval mode."""
    from timm.utils import reparameterize_model
    model = reparameterize_model(model.eval(), inplace=True)
    fuse_conv_batchnorm(model)
    return model


@torch.no_grad()
def calibrate_batchnorm_statistics(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``images`` (one train-mode forward).

    A freshly initialised model in eval mode normalises with mean 0 and variance 1, so its
    activations drift from layer to layer (a seeded HaloNet-50 ends with logits of 2e-6, in
    float16's subnormal range); with statistics taken from real activations they stay at the
    scale a trained model has. The model's mode and the momenta are restored.

    Args:
        model: the model (changed in place).
        images: a batch it accepts.

    Returns:
        ``model``.
    """
    batch_norms = [m for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not batch_norms:
        return model
    momenta = [bn.momentum for bn in batch_norms]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batch
    training = model.training
    model.train()
    model(images)
    model.train(training)
    for bn, momentum in zip(batch_norms, momenta):
        bn.momentum = momentum
    return model

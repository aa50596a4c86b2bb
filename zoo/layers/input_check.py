"""Clear errors for bad model inputs, raised before any layer sees them.

Policy (the same for every zoo model):
- the input must be a 4-D ``(B, C, H, W)`` floating-point tensor with the model's ``in_chans``
  and the dtype of the model's weights (unless autocast is on);
- height and width must be at least the model's minimum (its total stride, or what its
  windows/regions need);
- non-finite values (NaN, +-Inf) are refused, because they spread through attention and
  normalisation to the whole output and the failure would surface far from its cause. The
  check reads a value on the host, which on a GPU would make the host wait for the device
  (a synchronisation) on every forward, so by default it runs only where that is free: on
  CPU tensors, in eager mode. ``ZOO_CHECK_FINITE`` sets the policy (see ``check_finite``):
  unset, empty or ``auto`` = CPU only, ``1`` = on every device (GPUs sync), ``0`` = never.
  It never runs while tracing, exporting or compiling (it is data-dependent) nor on the
  meta device (no values);
- a batch of 0 images is valid input: every model returns empty outputs of the right shape.
"""
from __future__ import annotations

import os
import warnings

import torch
from .tracing import is_capturing

__all__ = ['InputError', 'validate_input', 'check_finite']

# ZOO_CHECK_FINITE values: where the finiteness check runs.
_FINITE_POLICIES = {'': 'auto', 'auto': 'auto', '1': 'always', '0': 'never'}
_warned_policies: set[str] = set()


class InputError(ValueError):
    """An input tensor that a zoo model cannot take, with what it accepts."""


def check_finite(x: torch.Tensor) -> bool:
    """Whether ``validate_input`` checks ``x`` for NaN and infinite values.

    Never while a graph is captured (tracing, ONNX export, ``torch.compile``) or on the meta
    device; otherwise as ``ZOO_CHECK_FINITE`` says, read at every call: ``0`` never, ``1``
    on every device (on a GPU the check synchronises host and device), unset/empty/``auto``
    only on CPU, where reading the result costs no synchronisation. An unknown value warns
    once and means ``auto``: a setting must not break a model.

    Args:
        x: the input tensor.
    """
    if is_capturing() or x.device.type == 'meta':
        return False
    value = os.environ.get('ZOO_CHECK_FINITE', '').strip().lower()
    policy = _FINITE_POLICIES.get(value)
    if policy is None:
        if value not in _warned_policies:
            _warned_policies.add(value)
            warnings.warn(f'ZOO_CHECK_FINITE={value!r} is not one of 0, 1, auto (or unset); '
                          'using auto (the finiteness check runs on CPU inputs only)', stacklevel=3)
        policy = 'auto'
    return policy == 'always' or (policy == 'auto' and x.device.type == 'cpu')


def validate_input(
        x: torch.Tensor,
        *,
        in_chans: int,
        min_size: int | tuple[int, int],
        weight_dtype: torch.dtype | None = None,
        name: str = 'model',
) -> None:
    """Raise ``InputError`` if ``x`` is not an image batch the model can take.

    Args:
        x: the input.
        in_chans: channels the model was built for.
        min_size: smallest accepted height and width (an int or ``(h, w)``).
        weight_dtype: dtype of the model's weights; a different input dtype is refused
            unless autocast is enabled.
        name: the model's name for the message.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f'{name} expects a torch.Tensor of shape (B, {in_chans}, H, W), got {type(x).__name__}')
    if x.ndim != 4:
        raise InputError(f'{name} expects a 4-D image batch (B, {in_chans}, H, W), got shape {tuple(x.shape)}')
    if x.shape[1] != in_chans:
        raise InputError(
            f'{name} was built for {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)}). '
            f'Create the model with in_chans={x.shape[1]} (pretrained stems are adapted), or convert the images.')
    if not x.is_floating_point():
        raise InputError(
            f'{name} expects a floating-point tensor (a normalised image), got {x.dtype}. '
            "Convert with x.float() / 255 and normalise with the model's mean/std (timm.data.resolve_data_config).")
    if (weight_dtype is not None and x.dtype != weight_dtype
            and not torch.is_autocast_enabled(x.device.type)):
        raise InputError(
            f'{name} has {weight_dtype} weights but the input is {x.dtype}; '
            f'convert one of them (x.to({weight_dtype}) or model.to({x.dtype})), or use torch.autocast.')
    min_h, min_w = (min_size, min_size) if isinstance(min_size, int) else min_size
    h, w = x.shape[-2:]
    if not is_capturing() and (h < min_h or w < min_w):
        raise InputError(
            f'{name} needs inputs of at least {min_h}x{min_w} pixels, got {h}x{w}. '
            'Resize or pad the images.')
    # One reduction instead of isfinite().all()'s five passes: NaN and inf propagate through a
    # float32 sum, and normalised images cannot overflow it.
    if check_finite(x) and not bool(torch.isfinite(x.sum(dtype=torch.float32))):
        raise InputError(
            f'{name} got an input with NaN or infinite values; they would spread to the whole output. '
            'Check the data pipeline (set ZOO_CHECK_FINITE=0 to skip this check).')

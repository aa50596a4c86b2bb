"""Rotary position embedding (RoPE) in real arithmetic, 1-D and 2-D.

RoPE treats the channels of a query/key as complex numbers and multiplies each by
``exp(i * position * frequency)``. Here the pairs are *interleaved*: channels ``(2j, 2j+1)``
form the real and imaginary parts of pair ``j`` (the layout of LLaMA's ``view_as_complex``
and of RAVLT's ``rotate_every_two``). Everything is written with ``sin``/``cos`` tables and
elementwise products, so it traces, compiles and exports to ONNX (complex tensors do not). In
eager mode, float32/float64 tensors with one angle per pair take LLaMA's complex product
instead: the same arithmetic in one pass over the data, where the real formula takes several
(forward and backward).

- :func:`apply_rope` rotates a tensor given its ``sin``/``cos`` tables (one entry per pair, or
  one per channel with each pair's two entries equal, as RAVLT stores them).
- :func:`rope_frequencies` and :func:`rope_1d` build the 1-D tables of a sequence (LLaMA /
  iLLaMA: ``theta ** (-2j / dim)``).
- :func:`rope_2d_frequencies` and :func:`rope_2d` build RAVLT's 2-D tables for any ``H x W``:
  the first half of the channels rotate with the row index, the second half with the column.
"""
from __future__ import annotations

import torch

from .tracing import is_capturing

__all__ = ['apply_rope', 'rope_frequencies', 'rope_1d', 'rope_2d_frequencies', 'rope_2d']


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x`` by the angles whose ``sin``/``cos`` are given.

    Pair ``j`` = channels ``(2j, 2j+1)`` becomes
    ``(x[2j] cos - x[2j+1] sin, x[2j+1] cos + x[2j] sin)``, i.e. the complex product
    ``(x[2j] + i x[2j+1]) * exp(i angle_j)``.

    Args:
        x: ``(..., N, d)`` with ``d`` even.
        sin: ``(N, d // 2)`` (one angle per pair) or ``(N, d)`` (one per channel, as RAVLT
            computes them: channel ``c`` of the output uses entry ``c``; it is a rotation when
            the two entries of each pair are equal), broadcastable against ``x``'s leading dims.
        cos: same shape as ``sin``.

    Returns:
        A tensor shaped like ``x``.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f'apply_rope: the last dim of x must be even, got {d}')
    if sin.shape != cos.shape:
        raise ValueError(f'apply_rope: sin {tuple(sin.shape)} and cos {tuple(cos.shape)} differ')
    if sin.shape[-1] == d // 2 and x.dtype in (torch.float32, torch.float64) and not is_capturing():
        return _rotate_complex(x, sin, cos)
    if sin.shape[-1] == d // 2:  # one angle per pair: give both channels of a pair the same entry
        # (stack + flatten rather than repeat_interleave, whose ONNX export bakes in the
        # traced sequence length)
        sin, cos = torch.stack((sin, sin), dim=-1).flatten(-2), torch.stack((cos, cos), dim=-1).flatten(-2)
    elif sin.shape[-1] != d:
        raise ValueError(f'apply_rope: sin/cos must have {d // 2} or {d} entries in the last dim, got {sin.shape[-1]}')
    # x * cos + rotate_every_two(x) * sin with rotate_every_two(x) = (-x1, x0, -x3, x2, ...): on
    # contiguous memory every product is a vectorised elementwise op (several times faster
    # than working on the strided halves of the pairs).
    x = x.contiguous()
    pairs = x.unflatten(-1, (d // 2, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def _rotate_complex(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    # view_as_complex needs unit stride in the pair and even strides elsewhere (true of q/k
    # views of a fused qkv projection with an even head dim, so usually no copy)
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
        x = x.clone(memory_format=torch.contiguous_format)  # (contiguous() keeps an odd offset)
    pairs = torch.view_as_complex(x.unflatten(-1, (x.shape[-1] // 2, 2)))
    rotation = torch.complex(cos.to(x.dtype), sin.to(x.dtype))
    return torch.view_as_real(pairs * rotation).flatten(-2)


def rope_frequencies(dim: int, theta: float = 10000.0, device: torch.device | None = None) -> torch.Tensor:
    """The ``dim // 2`` pair frequencies of 1-D RoPE: ``theta ** (-2j / dim)`` (LLaMA's rule).

    Args:
        dim: channels per head (even).
        theta: the base.
        device: device of the result.
    """
    if dim % 2:
        raise ValueError(f'rope_frequencies: dim must be even, got {dim}')
    return theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def rope_1d(seq_len: int, dim: int, theta: float = 10000.0, offset: int = 0,
            device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``sin``/``cos`` tables ``(seq_len, dim // 2)`` of positions ``offset .. offset + seq_len - 1``.

    Args:
        seq_len: number of positions.
        dim: channels per head (even).
        theta: the base of the frequencies.
        offset: the first position.
        device: device of the tables.
    """
    pos = torch.arange(offset, offset + seq_len, device=device, dtype=torch.float32)
    angles = pos[:, None] * rope_frequencies(dim, theta, device)[None, :]
    return angles.sin(), angles.cos()


def rope_2d_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """RAVLT's per-axis frequencies: ``theta ** -linspace(0, 1, head_dim // 4)``, each repeated twice.

    The result (``head_dim // 2`` entries, one per channel of an axis' half) is what the
    official checkpoints store as ``RoPE.angle``.

    Args:
        head_dim: channels per head (a multiple of 4).
        theta: the base.
    """
    if head_dim % 4:
        raise ValueError(f'rope_2d_frequencies: head_dim must be a multiple of 4, got {head_dim}')
    freqs = 1.0 / (theta ** torch.linspace(0, 1, head_dim // 4))
    return freqs.repeat_interleave(2)


def rope_2d(angle: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sin``/``cos`` tables ``(height * width, 2 * len(angle))`` of a row-major ``H x W`` grid.

    Channel ``c < len(angle)`` of token ``(y, x)`` has angle ``y * angle[c]``, channel
    ``len(angle) + c`` has ``x * angle[c]`` (RAVLT's layout: rows in the first half of the
    head, columns in the second).

    Args:
        angle: per-channel frequencies of one axis (e.g. :func:`rope_2d_frequencies` or the
            ``angle`` buffer of a checkpoint).
        height: grid rows.
        width: grid columns.
    """
    rows = torch.arange(height, device=angle.device, dtype=angle.dtype)[:, None] * angle  # (H, a)
    cols = torch.arange(width, device=angle.device, dtype=angle.dtype)[:, None] * angle  # (W, a)
    a = angle.shape[0]
    angles = torch.cat((rows[:, None, :].expand(height, width, a), cols[None, :, :].expand(height, width, a)), dim=-1)
    angles = angles.reshape(height * width, 2 * a)
    return angles.sin(), angles.cos()

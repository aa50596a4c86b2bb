"""Dynamic position bias (DPB): an MLP that turns relative coordinates into attention biases.

CrossFormer (arXiv:2108.00154) replaces the relative position bias table of Swin by a small
MLP evaluated on the relative coordinates ``(dy, dx)`` of a group, so the same weights give a
bias for any group size: ``Linear(2 -> d)``, then three times ``LayerNorm - ReLU - Linear``
(the last one to ``num_heads``), optionally with residuals around the middle two.

The bias depends only on the weights and on the group size, not on the input, so in eval mode
:class:`DynamicPositionBias` keeps the finished ``(heads, N, N)`` bias per (group size, device,
dtype) and recomputes it only when the weights change (in place or replaced), the module goes
back to training mode, or gradients are needed.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from .tracing import is_capturing

__all__ = ['DynamicPositionBias', 'relative_coords', 'relative_position_index']


def relative_coords(group_size: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """All relative offsets of a ``gh x gw`` group, ``((2gh-1) * (2gw-1), 2)`` float, row-major
    over ``dy`` in ``[1-gh, gh-1]`` then ``dx`` in ``[1-gw, gw-1]``."""
    gh, gw = group_size
    dy = torch.arange(1 - gh, gh, device=device, dtype=torch.float32)
    dx = torch.arange(1 - gw, gw, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(dy, dx, indexing='ij'), dim=-1).reshape(-1, 2)


def relative_position_index(group_size: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """``(N, N)`` index into :func:`relative_coords` of the offset query - key, ``N = gh * gw``
    with the group's tokens in row-major order."""
    gh, gw = group_size
    ys, xs = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing='ij')
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :] + gh - 1) * (2 * gw - 1) + (xs[:, None] - xs[None, :] + gw - 1)


class DynamicPositionBias(nn.Module):
    """CrossFormer's DPB MLP, returning the full ``(heads, N, N)`` bias of a group.

    Parameter names follow the official ``DynamicPosBias`` (``pos_proj``, ``pos1``-``pos3`` as
    ``Sequential(LayerNorm, ReLU, Linear)``), so official weights load unchanged.

    Args:
        pos_dim: hidden width of the MLP (CrossFormer: attention width // 16).
        num_heads: attention heads (output width).
        residual: residual connections around ``pos1`` and ``pos2`` (unused by CrossFormer).
    """

    def __init__(self, pos_dim: int, num_heads: int, residual: bool = False):
        super().__init__()
        self.pos_dim = pos_dim
        self.num_heads = num_heads
        self.residual = residual
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))
        self._cache: dict[tuple, torch.Tensor] = {}
        self._cache_weights: tuple = ()

    def table(self, coords: torch.Tensor) -> torch.Tensor:
        """The MLP on ``(..., 2)`` coordinates: ``(..., num_heads)``."""
        pos = self.pos_proj(coords.to(self.pos_proj.weight.dtype))
        if self.residual:
            pos = pos + self.pos1(pos)
            pos = pos + self.pos2(pos)
        else:
            pos = self.pos2(self.pos1(pos))
        return self.pos3(pos)

    def compute(self, group_size: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
        """The bias of a ``gh x gw`` group, ``(heads, N, N)``, without the cache."""
        device = self.pos_proj.weight.device if device is None else device
        # In the weights' dtype, never autocast's: the cache is shared by float32 and autocast
        # calls, and a bias computed under autocast would be rounded for later float32 calls.
        with torch.autocast(device.type, enabled=False) if torch.amp.is_autocast_available(device.type) \
                else contextlib.nullcontext():
            table = self.table(relative_coords(group_size, device))  # ((2gh-1)(2gw-1), heads)
        n = group_size[0] * group_size[1]
        return table[relative_position_index(group_size, device).reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def _weights_signature(self) -> tuple:
        # Any in-place update (optimizer step, load_state_dict's copy_) bumps _version; a
        # replaced tensor (.to(), .half(), parameter reassignment) changes the storage.
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def _cacheable(self) -> bool:
        if self.training or is_capturing():
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def forward(self, group_size: int | tuple[int, int], dtype: torch.dtype | None = None,
                device: torch.device | None = None) -> torch.Tensor:
        """The ``(heads, N, N)`` bias of a group (``N = gh * gw``), in ``dtype`` on ``device``.

        In eval mode without gradients the result is cached per (group size, device, dtype).
        """
        gh, gw = (group_size, group_size) if isinstance(group_size, int) else tuple(group_size)
        device = self.pos_proj.weight.device if device is None else torch.device(device)
        if not self._cacheable():
            bias = self.compute((gh, gw), device)
            return bias if dtype is None else bias.to(dtype)
        signature = self._weights_signature()
        if signature != self._cache_weights:
            self._cache.clear()
            self._cache_weights = signature
        key = (gh, gw, device, dtype)
        bias = self._cache.get(key)
        if bias is None:
            bias = self.compute((gh, gw), device)
            bias = (bias if dtype is None else bias.to(dtype)).contiguous()
            self._cache[key] = bias
        return bias

    def clear_cache(self) -> None:
        self._cache.clear()
        self._cache_weights = ()

    def train(self, mode: bool = True) -> DynamicPositionBias:
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):  # .to() / .half() / .cuda(): new weights
        self.clear_cache()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f'pos_dim={self.pos_dim}, num_heads={self.num_heads}, residual={self.residual}'

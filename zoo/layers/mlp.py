"""MLPs whose training step keeps one hidden tensor per activation input, not per intermediate.

Autograd of ``fc2(act(h))`` keeps ``h`` (for the activation's backward) and ``act(h)`` (for
the weight gradient of ``fc2``): two hidden-width tensors per block, the largest activations
a transformer block stores. :func:`linear_of_recomputed` keeps only the activation's inputs
and recomputes the cheap elementwise part in the backward (no matmul is recomputed, unlike
checkpointing the MLP). Forward values and gradients are those of the plain formula.

The price is one more elementwise pass per MLP in the backward (the GELU or SiLU forward):
``tools/side_by_side.py --profile`` shows it as the extra ``aten::gelu`` calls. Inside
``with recompute_activations(False):`` the MLPs keep their outputs as plain autograd does.
The plain formula also runs where nothing is saved (no grad, inputs without grad), while
tracing or exporting, and under ``torch.compile`` (whose partitioner already recomputes
elementwise ops it finds cheaper to remake).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp
from torch import Tensor

from .tracing import is_capturing

__all__ = ['Recomputable', 'linear_of_recomputed', 'Mlp', 'recompute_activations', 'swiglu_linear']


_RECOMPUTE = True


@contextlib.contextmanager
def recompute_activations(enabled: bool) -> Iterator[None]:
    """Turn the MLPs' recomputation on (the default) or off inside the block.

    Off, a training step keeps the activation outputs as plain autograd does: more memory,
    no elementwise recomputation in the backward. Read when the forward runs.
    """
    global _RECOMPUTE
    previous, _RECOMPUTE = _RECOMPUTE, bool(enabled)
    try:
        yield
    finally:
        _RECOMPUTE = previous


class Recomputable:
    """An elementwise function with its derivative as the ATen kernels autograd would call.

    Args:
        forward: ``(*inputs) -> hidden``.
        backward: ``(grad_hidden, state, hidden, *inputs) -> (grad per input)``, where ``state``
            is what ``remake`` kept and ``hidden`` the remade output, no longer needed (its memory
            may hold a result); None: autograd of ``forward`` in the backward.
        remake: ``(*inputs) -> (hidden, state)`` for the backward: ``forward`` plus the
            intermediates the derivative reuses (default: no state).
    """

    def __init__(self, forward: Callable[..., Tensor], backward: Callable[..., tuple[Tensor, ...]] | None = None,
                 remake: Callable[..., tuple[Tensor, Any]] | None = None):
        self.forward, self.backward = forward, backward
        self.remake = remake or (lambda *inputs: (forward(*inputs), None))


def _reusable(buffer: Tensor, like: Tensor) -> bool:
    return (buffer.shape == like.shape and buffer.dtype == like.dtype and buffer.is_contiguous()
            and like.is_contiguous())


def _gelu_backward(grad: Tensor, _: None, hidden: Tensor, h: Tensor, approximate: str) -> tuple[Tensor]:
    if _reusable(hidden, h):  # the gradient into the remade activation's memory: no fresh allocation
        return (torch.ops.aten.gelu_backward.grad_input(grad, h, approximate=approximate, grad_input=hidden),)
    return (torch.ops.aten.gelu_backward(grad, h, approximate=approximate),)


@functools.lru_cache(maxsize=None)
def _gelu(approximate: str) -> Recomputable:
    return Recomputable(lambda h: F.gelu(h, approximate=approximate),
                        lambda grad, state, hidden, h: _gelu_backward(grad, state, hidden, h, approximate))


def _swiglu_remake(gate: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    silu = F.silu(gate)
    return silu * up, silu


def _swiglu_backward(grad: Tensor, silu: Tensor, hidden: Tensor, gate: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    # autograd's MulBackward0 then SiluBackward0, written into the remade tensors' memory
    if not (_reusable(hidden, gate) and _reusable(silu, up) and grad.shape == up.shape):
        return torch.ops.aten.silu_backward(grad * up, gate), grad * silu
    grad_gate = torch.ops.aten.silu_backward.grad_input(torch.mul(grad, up, out=hidden), gate, grad_input=hidden)
    return grad_gate, silu.mul_(grad)


_SWIGLU = Recomputable(lambda gate, up: F.silu(gate) * up, _swiglu_backward, _swiglu_remake)


def _recomputable(fn: Callable[..., Tensor] | Recomputable) -> Recomputable:
    if isinstance(fn, Recomputable):
        return fn
    if type(fn) is nn.GELU:
        return _gelu(fn.approximate)
    return Recomputable(fn)


class _LinearOfRecomputed(torch.autograd.Function):
    """``F.linear(fn(*inputs), weight, bias)`` saving ``inputs`` instead of ``fn``'s output."""

    @staticmethod
    def forward(ctx, fn: Recomputable, weight: Tensor, bias: Tensor | None, *inputs: Tensor) -> Tensor:
        ctx.fn = fn
        ctx.has_bias = bias is not None
        ctx.save_for_backward(weight, *inputs)
        return F.linear(fn.forward(*inputs), weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, *inputs = ctx.saved_tensors
        fn: Recomputable = ctx.fn
        needs_inputs = ctx.needs_input_grad[3:]
        wanted = [i for i, need in enumerate(needs_inputs) if need]
        # create_graph (gradient penalties): fn is remade from the saved inputs themselves and
        # differentiated by autograd, so the returned gradients are differentiable.
        create_graph = torch.is_grad_enabled()
        generic = create_graph or fn.backward is None
        if generic:
            with torch.enable_grad():
                leaves = inputs if create_graph else [x.detach().requires_grad_(need)
                                                      for x, need in zip(inputs, needs_inputs)]
                hidden = fn.forward(*leaves)
        else:
            hidden, state = fn.remake(*inputs)
        grad_2d = grad.reshape(-1, grad.shape[-1])
        hidden_2d = hidden.reshape(-1, hidden.shape[-1])
        grad_weight = grad_2d.t().mm(hidden_2d if create_graph else hidden_2d.detach()) if ctx.needs_input_grad[1] else None
        grad_bias = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_inputs: list[Tensor | None] = [None] * len(inputs)
        if wanted:
            grad_hidden = grad.matmul(weight)
            if generic:
                grads = torch.autograd.grad(hidden, [leaves[i] for i in wanted], grad_hidden, create_graph=create_graph)
            else:
                del hidden_2d
                all_grads = fn.backward(grad_hidden, state, hidden, *inputs)
                grads = [all_grads[i] for i in wanted]
            for i, g in zip(wanted, grads):
                grad_inputs[i] = g
        return None, grad_weight, grad_bias, *grad_inputs


def linear_of_recomputed(fn: Callable[..., Tensor] | Recomputable, inputs: tuple[Tensor, ...], weight: Tensor,
                         bias: Tensor | None = None) -> Tensor:
    """``F.linear(fn(*inputs), weight, bias)``, keeping ``inputs`` for the backward instead of ``fn(*inputs)``.

    Args:
        fn: an elementwise function of ``inputs`` (an activation, a gated product), or a
            :class:`Recomputable` with its derivative; it runs again in the backward, so it
            must be deterministic (no dropout). ``nn.GELU`` modules use ATen's GELU kernels
            directly; other functions are differentiated by autograd in the backward.
        inputs: its tensors, with the hidden width last.
        weight: ``(out, hidden)`` weight.
        bias: ``(out,)`` bias or None.
    """
    saves = _RECOMPUTE and torch.is_grad_enabled() and (any(x.requires_grad for x in inputs) or weight.requires_grad
                                         or (bias is not None and bias.requires_grad))
    if not saves or is_capturing():
        return F.linear((fn.forward if isinstance(fn, Recomputable) else fn)(*inputs), weight, bias)
    fn = _recomputable(fn)
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        # The casts autocast gives F.linear, made in the graph (their backward returns the
        # parameters' gradients in the parameters' dtype); fn sees what it would have seen.
        dtype = torch.get_autocast_dtype(device)
        weight = weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        if any(x.dtype != dtype for x in inputs):  # fn's output cast too: autograd differentiates the cast
            fn = Recomputable(lambda *xs, _f=fn.forward: _f(*xs).to(dtype))
        with torch.autocast(device, enabled=False):
            return _LinearOfRecomputed.apply(fn, weight, bias, *inputs)
    return _LinearOfRecomputed.apply(fn, weight, bias, *inputs)


def swiglu_linear(gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(silu(gate) * up, weight, bias)`` keeping only ``gate`` and ``up`` for the backward."""
    return linear_of_recomputed(_SWIGLU, (gate, up), weight, bias)


class Mlp(TimmMlp):
    """timm's ``Mlp`` (same arguments, parameters and state-dict keys) whose training step keeps
    the hidden pre-activation only (:func:`linear_of_recomputed`).

    The plain forward runs when it cannot apply: a conv MLP (``use_conv``), a hidden norm, or
    hidden dropout in training.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (not isinstance(self.fc2, nn.Linear) or not isinstance(self.norm, nn.Identity)
                or (self.training and self.drop1.p > 0)):
            return super().forward(x)
        return self.drop2(linear_of_recomputed(self.act, (self.fc1(x),), self.fc2.weight, self.fc2.bias))

"""MLPs whose training step keeps one hidden tensor per activation input, not per intermediate.

Autograd of ``fc2(act(h))`` keeps ``h`` (for the activation's backward) and ``act(h)`` (for
the weight gradient of ``fc2``): two hidden-width tensors per block, the largest activations
a transformer block stores. :func:`linear_of_recomputed` keeps only the activation's inputs
and recomputes the cheap elementwise part in the backward (no matmul is recomputed, unlike
checkpointing the MLP). Forward values and gradients are those of the plain formula.

The plain formula runs where nothing is saved (no grad, inputs without grad), while tracing
or exporting, and under ``torch.compile`` (whose partitioner already recomputes elementwise
ops it finds cheaper to remake).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp
from torch import Tensor

from .tracing import is_capturing

__all__ = ['linear_of_recomputed', 'Mlp', 'swiglu_linear']


class _LinearOfRecomputed(torch.autograd.Function):
    """``F.linear(fn(*inputs), weight, bias)`` saving ``inputs`` instead of ``fn``'s output."""

    @staticmethod
    def forward(ctx, fn: Callable[..., Tensor], weight: Tensor, bias: Tensor | None, *inputs: Tensor) -> Tensor:
        ctx.fn = fn
        ctx.has_bias = bias is not None
        ctx.save_for_backward(weight, *inputs)
        return F.linear(fn(*inputs), weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, *inputs = ctx.saved_tensors
        needs_inputs = ctx.needs_input_grad[3:]
        # create_graph (gradient penalties): fn is remade from the saved inputs themselves, so
        # the returned gradients are differentiable; otherwise from detached copies.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaves = inputs if create_graph else [x.detach().requires_grad_(need) for x, need in zip(inputs, needs_inputs)]
            hidden = ctx.fn(*leaves)
        grad_2d = grad.reshape(-1, grad.shape[-1])
        hidden_2d = hidden.reshape(-1, hidden.shape[-1])
        grad_weight = grad_2d.t().mm(hidden_2d if create_graph else hidden_2d.detach()) if ctx.needs_input_grad[1] else None
        grad_bias = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_inputs: list[Tensor | None] = [None] * len(inputs)
        wanted = [i for i, need in enumerate(needs_inputs) if need]
        if wanted:
            grad_hidden = grad.matmul(weight)
            grads = torch.autograd.grad(hidden, [leaves[i] for i in wanted], grad_hidden, create_graph=create_graph)
            for i, g in zip(wanted, grads):
                grad_inputs[i] = g
        return None, grad_weight, grad_bias, *grad_inputs


def linear_of_recomputed(fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], weight: Tensor,
                         bias: Tensor | None = None) -> Tensor:
    """``F.linear(fn(*inputs), weight, bias)``, keeping ``inputs`` for the backward instead of ``fn(*inputs)``.

    Args:
        fn: an elementwise function of ``inputs`` (an activation, a gated product); it runs
            again in the backward, so it must be deterministic (no dropout).
        inputs: its tensors, with the hidden width last.
        weight: ``(out, hidden)`` weight.
        bias: ``(out,)`` bias or None.
    """
    saves = torch.is_grad_enabled() and (any(x.requires_grad for x in inputs) or weight.requires_grad
                                         or (bias is not None and bias.requires_grad))
    if not saves or is_capturing():
        return F.linear(fn(*inputs), weight, bias)
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        # The casts autocast gives F.linear, made in the graph (their backward returns the
        # parameters' gradients in the parameters' dtype); fn sees what it would have seen.
        dtype = torch.get_autocast_dtype(device)
        weight = weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device, enabled=False):
            return _LinearOfRecomputed.apply(lambda *xs: fn(*xs).to(dtype), weight, bias, *inputs)
    return _LinearOfRecomputed.apply(fn, weight, bias, *inputs)


def _swiglu(gate: Tensor, up: Tensor) -> Tensor:
    return F.silu(gate) * up


def swiglu_linear(gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(silu(gate) * up, weight, bias)`` keeping only ``gate`` and ``up`` for the backward."""
    return linear_of_recomputed(_swiglu, (gate, up), weight, bias)


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

"""zoo.layers.mlp: the MLPs that keep the activation's inputs only, against the plain formula."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp

from zoo.layers import Mlp, linear_of_recomputed, recompute_activations, swiglu_linear


def _pair(dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    ref = TimmMlp(12, 40, **kwargs).to(dtype)
    ours = Mlp(12, 40, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _step(module, x, grad):
    x = x.detach().clone().requires_grad_()
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad, [p.grad for p in module.parameters()]


def _saved_storages(fn, exclude=()):
    """Bytes of the distinct storages autograd saves during ``fn()``, ``exclude``'s (parameters) aside."""
    storages = {}
    excluded = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t):
        if t.untyped_storage().data_ptr() not in excluded:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_mlp_matches_timm_exactly(dtype):
    ref, ours = _pair(dtype)
    x = torch.randn(3, 7, 12, dtype=dtype)
    grad = torch.randn(3, 7, 12, dtype=dtype)
    out_r, gx_r, gp_r = _step(ref, x, grad)
    out_o, gx_o, gp_o = _step(ours, x, grad)
    assert torch.equal(out_r, out_o)
    torch.testing.assert_close(gx_o, gx_r, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)
    for a, b in zip(gp_o, gp_r):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_mlp_under_autocast_is_bit_equal(dtype):
    # The casts autocast gives F.linear happen in the graph: same values, float32 parameter grads.
    ref, ours = _pair(torch.float32)
    x = torch.randn(3, 7, 12)
    grad = torch.randn(3, 7, 12).to(dtype)
    with torch.autocast('cpu', dtype=dtype):
        out_r, gx_r, gp_r = _step(ref, x, grad)
        out_o, gx_o, gp_o = _step(ours, x, grad)
    assert out_o.dtype == out_r.dtype == dtype
    assert torch.equal(out_r, out_o) and torch.equal(gx_r, gx_o)
    for a, b in zip(gp_o, gp_r):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_mlp_keeps_one_hidden_tensor():
    ref, ours = _pair(torch.float32)
    x = torch.randn(4, 50, 12, requires_grad=True)
    _, saved_ref = _saved_storages(lambda: ref(x), exclude=ref.parameters())
    _, saved_ours = _saved_storages(lambda: ours(x), exclude=ours.parameters())
    hidden = 4 * 50 * 40 * 4
    assert saved_ref - saved_ours == hidden  # act(h) is no longer kept; x and h still are
    assert saved_ours == hidden + x.numel() * 4


def test_swiglu_linear_matches_formula():
    g = torch.Generator().manual_seed(0)
    gate, up = (torch.randn(2, 9, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weight = torch.randn(5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 9, 5, generator=g, dtype=torch.float64)
    ref = F.linear(F.silu(gate) * up, weight)
    ref_grads = torch.autograd.grad(ref, (gate, up, weight), grad)
    out, saved = _saved_storages(lambda: swiglu_linear(gate, up, weight), exclude=(gate, up, weight))
    grads = torch.autograd.grad(out, (gate, up, weight), grad)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert saved == 0  # gate and up are leaves here: nothing beyond the inputs is kept


def test_only_the_wanted_gradients():
    ref, ours = _pair(torch.float64)
    for p in ours.fc2.parameters():
        p.requires_grad_(False)
    for p in ref.fc2.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    grad = torch.randn(2, 5, 12, dtype=torch.float64)
    _, gx_r, gp_r = _step(ref, x, grad)
    _, gx_o, gp_o = _step(ours, x, grad)
    torch.testing.assert_close(gx_o, gx_r, rtol=0, atol=1e-12)
    assert ours.fc2.weight.grad is None and ours.fc2.bias.grad is None
    torch.testing.assert_close(ours.fc1.weight.grad, ref.fc1.weight.grad, rtol=0, atol=1e-12)
    # inputs without grad, weight with grad: only the weight's
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(6, 4, dtype=torch.float64)
    out = linear_of_recomputed(torch.tanh, (h,), weight)
    (gw,) = torch.autograd.grad(out.sum(), weight)
    torch.testing.assert_close(gw, torch.ones(6, 3, dtype=torch.float64).t() @ torch.tanh(h))


def test_plain_formula_where_nothing_is_saved_or_dropout_runs():
    ref, ours = _pair(torch.float32)
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    traced = torch.jit.trace(ours, x)  # tracing records F.linear, not an autograd.Function
    assert torch.equal(traced(x), ref(x))
    assert 'prim::PythonOp' not in str(traced.graph)
    # hidden dropout in training: the plain forward (dropout cannot be recomputed)
    ref_d, ours_d = _pair(torch.float32, drop=0.5)
    x = torch.randn(2, 5, 12, requires_grad=True)
    torch.manual_seed(3)
    a = ref_d(x)
    torch.manual_seed(3)
    b = ours_d(x)
    assert torch.equal(a, b)
    assert 'LinearOfRecomputed' not in b.grad_fn.name()
    ours_d.eval()
    assert 'LinearOfRecomputed' in ours_d(x).grad_fn.name()  # dropout off: the saving path


def test_gradient_penalty_matches_timm():
    # A loss on input gradients (create_graph=True) differentiates the backward itself.
    ref, ours = _pair(torch.float64)
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    results = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(module(xi).pow(2).sum(), xi, create_graph=True)
        gx.pow(2).sum().backward()
        results.append([xi.grad, *(p.grad for p in module.parameters())])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_swiglu_linear_is_bit_equal_to_autograd(dtype):
    # float32 as is, half precisions under autocast (fc1/fc3 outputs arrive in the autocast dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 16, generator=g, requires_grad=True)
    w1, w3 = (torch.randn(24, 16, generator=g, requires_grad=True) for _ in range(2))
    w2 = torch.randn(16, 24, generator=g, requires_grad=True)
    autocast = torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32)
    results = []
    for ours in (False, True):
        with autocast:
            gate, up = F.linear(x, w1), F.linear(x, w3)
            out = swiglu_linear(gate, up, w2) if ours else F.linear(F.silu(gate) * up, w2)
        grads = torch.autograd.grad(out, (x, w1, w2, w3), torch.ones_like(out))
        results.append((out, *grads))
    for a, b in zip(*results):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_recompute_activations_off_keeps_the_outputs_as_autograd_does():
    ref, ours = _pair(torch.float32)
    x = torch.randn(4, 50, 12, requires_grad=True)
    _, saved_ref = _saved_storages(lambda: ref(x), exclude=ref.parameters())
    with recompute_activations(False):
        out, saved_off = _saved_storages(lambda: ours(x), exclude=ours.parameters())
    _, saved_on = _saved_storages(lambda: ours(x), exclude=ours.parameters())  # restored on exit
    assert saved_off == saved_ref > saved_on
    assert 'LinearOfRecomputed' not in out.grad_fn.name()

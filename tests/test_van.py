"""VAN's MLP: the training step keeps the GELU's input only (zoo.layers.linear_of_recomputed),
against the plain formula of the official Mlp (1x1 conv - depthwise 3x3 - GELU - 1x1 conv)."""
from __future__ import annotations

import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones.van import DwConvMlp
from test_layers_mlp import _saved_storages

pytestmark = pytest.mark.usefixtures('one_thread')


def _official_mlp(m: DwConvMlp, x: torch.Tensor) -> torch.Tensor:
    return m.fc2(m.act(m.dwconv(m.fc1(x))))


def _grads(fn, m: DwConvMlp, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    m.zero_grad(set_to_none=True)
    out = fn(x)
    out.backward(grad)
    return out.detach(), x.grad, [p.grad for p in m.parameters()]


def _mlp_and_input(memory_format=torch.channels_last):
    torch.manual_seed(0)
    m = DwConvMlp(8, 32).double()
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64).to(memory_format=memory_format)
    return m, x, torch.randn(2, 8, 9, 11, dtype=torch.float64)


def test_mlp_step_matches_the_official_formula_and_keeps_one_hidden_map_fewer():
    m, x, grad = _mlp_and_input()
    out, gx, gp = _grads(m, m, x, grad)
    ref_out, ref_gx, ref_gp = _grads(lambda t: _official_mlp(m, t), m, x, grad)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-13)
    torch.testing.assert_close(gx, ref_gx, rtol=0, atol=1e-13)
    for a, b in zip(gp, ref_gp):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)  # the model stays channels-last
    xr = x.requires_grad_()
    _, saved = _saved_storages(lambda: m(xr), exclude=m.parameters())
    _, saved_ref = _saved_storages(lambda: _official_mlp(m, xr), exclude=m.parameters())
    assert saved_ref - saved == 2 * 9 * 11 * 32 * 8  # act(h), float64: no longer kept


def test_mlp_runs_the_official_formula_where_nothing_is_saved():
    m, x, grad = _mlp_and_input(torch.contiguous_format)
    # NCHW maps (channels_last=False): the conv path, same result
    out = m(x.requires_grad_())
    assert 'LinearOfRecomputed' not in out.grad_fn.name() and torch.equal(out, _official_mlp(m, x))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), _official_mlp(m, x))
    traced = torch.jit.trace(m, x.detach().to(memory_format=torch.channels_last))  # exports keep the conv
    graph = str(traced.inlined_graph)
    assert 'prim::PythonOp' not in graph and graph.count('aten::_convolution') == 3
    # dropout after the GELU, in training: the plain forward (dropout is not remade)
    m_drop = DwConvMlp(8, 32, drop=0.5).double().train()
    out = m_drop(x.detach().to(memory_format=torch.channels_last).requires_grad_())
    assert 'LinearOfRecomputed' not in out.grad_fn.name()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_van_b0_training_step_under_autocast_matches_the_conv_mlp(dtype, monkeypatch):
    # The whole model (BatchNorm in training mode, channels-last): gradients of the recomputing
    # MLP against the official conv MLP, both under autocast; fc2 as a linear instead of a 1x1
    # conv rounds differently, nothing more.
    torch.manual_seed(0)
    model = timm.create_model('van_b0', num_classes=10).train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([1, 7])
    results = []
    for official in (False, True):
        if official:
            monkeypatch.setattr(DwConvMlp, 'forward', _official_mlp)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with torch.autocast('cpu', dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        results.append((loss.detach().float(), [p.grad.clone() for p in model.parameters()]))
    (loss, grads), (ref_loss, ref_grads) = results
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=2e-2)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == r.dtype == torch.float32 and torch.isfinite(g).all()
    flat, ref_flat = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in ref_grads])
    assert (flat - ref_flat).norm() / ref_flat.norm() < (5e-2 if dtype == torch.bfloat16 else 1e-2)

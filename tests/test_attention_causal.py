"""iLLaMA's post-softmax causal attention: every path against the materialised formula."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import zoo.attention as za
from zoo.attention import causal_post_softmax_attention, soft_causal_mask

psm = importlib.import_module('zoo.attention.causal')


@pytest.fixture(autouse=True)
def always_fused(monkeypatch):
    # The 'sdpa' backend materialises small problems; these tests are about the fused paths.
    monkeypatch.setattr(psm, '_MATERIALISE_BYTES', 0)


def _official(q, k, v, scale, rate=0.0):
    # The official iLLaMA attention, written out: softmax, multiply by the mask, no renormalisation.
    n = q.shape[-2]
    mask = rate * torch.ones(n, n, dtype=q.dtype) + (1 - rate) * torch.ones(n, n, dtype=q.dtype).tril()
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) * mask @ v


def _qkv(shape, dtype=torch.float64, seed=0, dv=None):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(shape[:-1] + (dv or shape[-1],), generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v)]


def _grads(fn, q, k, v, seed=1):
    out = fn(q, k, v)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out.detach(), *torch.autograd.grad(out, (q, k, v), g))


@pytest.mark.parametrize('rate', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('shape', [(2, 3, 37, 16), (1, 2, 1, 8), (1, 1, 197, 64)])
def test_reference_is_the_official_formula(shape, rate):
    q, k, v = _qkv(shape)
    ours = causal_post_softmax_attention(q, k, v, soft_rate=rate, scale=0.3, backend='reference')
    torch.testing.assert_close(ours, _official(q, k, v, 0.3, rate), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('rate', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('shape', [(2, 3, 37, 16), (1, 2, 1, 8), (1, 1, 130, 32)])
def test_sdpa_forward_and_backward_equal_reference(shape, rate):
    q, k, v = _qkv(shape)
    ref = _grads(lambda *t: causal_post_softmax_attention(*t, soft_rate=rate, backend='reference'), q, k, v)
    fast = _grads(lambda *t: causal_post_softmax_attention(*t, soft_rate=rate, backend='sdpa'), q, k, v)
    for name, a, b in zip(('out', 'dq', 'dk', 'dv'), fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_sdpa_float32_and_bfloat16():
    q, k, v = _qkv((2, 4, 65, 32), dtype=torch.float32)
    ref = _grads(lambda *t: causal_post_softmax_attention(*t, backend='reference'), q, k, v)
    fast = _grads(lambda *t: causal_post_softmax_attention(*t, backend='sdpa'), q, k, v)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    qb, kb, vb = (t.detach().bfloat16() for t in (q, k, v))
    out = causal_post_softmax_attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref[0], rtol=0.05, atol=0.05)


def test_blocked_path_other_devices_and_value_dims(monkeypatch):
    # The portable path (non-CPU devices, or a v head dim unlike q's): lse from logits in
    # query blocks; small blocks to cross block borders.
    monkeypatch.setattr(psm, '_BLOCK', 8)
    q, k, v = _qkv((2, 3, 37, 16), dv=12)
    ref = _grads(lambda *t: causal_post_softmax_attention(*t, soft_rate=0.2, backend='reference'), q, k, v)
    fast = _grads(lambda *t: causal_post_softmax_attention(*t, soft_rate=0.2, backend='sdpa'), q, k, v)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_not_the_same_as_is_causal():
    # The reason for this op: SDPA's is_causal renormalises the rows, the official mask does not.
    q, k, v = (t.detach() for t in _qkv((1, 2, 50, 16)))
    ours = causal_post_softmax_attention(q, k, v)
    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (ours - causal).abs().max() > 0.1
    # the last row sees every key: there both agree with full attention
    full = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours[..., -1, :], full[..., -1, :])
    # row 0 is v_0 scaled by its share of the full softmax
    p00 = ((q[..., 0, :] * k[..., 0, :]).sum(-1) / 4).exp() / ((q[..., :1, :] @ k.transpose(-2, -1)) / 4).exp().sum(-1)[..., 0]
    torch.testing.assert_close(ours[..., 0, :], p00[..., None] * v[..., 0, :])


def test_fast_path_keeps_no_n_by_n_tensor_for_backward():
    n = 300
    q, k, v = _qkv((1, 2, n, 16), dtype=torch.float32)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        causal_post_softmax_attention(q, k, v, backend='sdpa').sum().backward()
    assert saved and all(n * n > 0 and s[-2:] != (n, n) for s in saved), saved
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        causal_post_softmax_attention(q, k, v, backend='reference').sum()
    # the reference materialises the weights: the softmax output and the masked weights, and no
    # (N, N) mask beside them (tril's backward saves nothing)
    assert sum(s[-2:] == (n, n) for s in saved) == 2, saved


@pytest.mark.parametrize('rate', [0.0, 0.3])
def test_materialised_path_keeps_one_n_by_n_tensor_and_reference_gradients(monkeypatch, rate):
    monkeypatch.setattr(psm, '_MATERIALISE_BYTES', 2 ** 40)
    n = 45
    q, k, v = _qkv((2, 3, n, 16))
    ref = _grads(lambda *t: causal_post_softmax_attention(*t, soft_rate=rate, backend='reference'), q, k, v)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fast = _grads(lambda *t: causal_post_softmax_attention(*t, soft_rate=rate, backend='sdpa'), q, k, v)
    assert sum(s[-2:] == (n, n) for s in saved) == 1, saved  # the softmax alone (the reference: 2)
    for name, a, b in zip(('out', 'dq', 'dk', 'dv'), fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    out = causal_post_softmax_attention(q, k, v, soft_rate=rate, backend='sdpa')
    (dq,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):  # an error, not a silently wrong second derivative
        dq.sum().backward()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_materialised_path_under_autocast_matches_reference(monkeypatch, dtype):
    # float32 operands under autocast: it casts the matmuls' operands, the softmax stays in float32
    monkeypatch.setattr(psm, '_MATERIALISE_BYTES', 2 ** 40)
    q, k, v = _qkv((2, 3, 33, 16), dtype=torch.float32)
    results = []
    for backend in ('reference', 'sdpa'):
        with torch.autocast('cpu', dtype=dtype):
            out = causal_post_softmax_attention(q, k, v, soft_rate=0.2, backend=backend)
        assert out.dtype == dtype
        results.append(_grads(lambda *t: out, q, k, v))
    for name, a, b in zip(('out', 'dq', 'dk', 'dv'), *results):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_sdpa_materialises_small_problems(monkeypatch):
    monkeypatch.setattr(psm, '_MATERIALISE_BYTES', 32 * 2 ** 20)
    small, large = [], []
    monkeypatch.setattr(psm, '_reference', lambda *a: small.append(a[0].shape) or a[0])
    monkeypatch.setattr(psm._PostMaskFlashCPU, 'apply', lambda *a: large.append(a[0].shape) or a[0])
    q = torch.zeros(8, 3, 197, 64)
    causal_post_softmax_attention(q, q, q)  # 3.7 MB of weights
    q = torch.zeros(1, 3, 4097, 64)
    causal_post_softmax_attention(q, q, q)  # 201 MB
    assert small == [(8, 3, 197, 64)] and large == [(1, 3, 4097, 64)]


def test_backend_selection_follows_the_zoo_rule(monkeypatch):
    q, k, v = (t.detach() for t in _qkv((1, 1, 9, 8)))
    calls = []
    monkeypatch.setitem(psm.PATTERN.paths, 'reference', lambda *a: calls.append('reference') or torch.zeros(1))
    monkeypatch.setitem(psm.PATTERN.paths, 'sdpa', lambda *a: calls.append('sdpa') or torch.zeros(1))
    causal_post_softmax_attention(q, k, v)
    with za.use_backend('math'):
        causal_post_softmax_attention(q, k, v)
        causal_post_softmax_attention(q, k, v, backend='sdpa')
    monkeypatch.setenv(za.ENV_VAR, 'triton,reference')
    causal_post_softmax_attention(q, k, v)
    assert calls == ['sdpa', 'reference', 'sdpa', 'reference']
    with pytest.raises(za.BackendNotSupported, match='causal_post_softmax_attention'):
        causal_post_softmax_attention(q, k, v, backend='natten')


def test_bad_arguments():
    q, k, v = (t.detach() for t in _qkv((1, 1, 9, 8)))
    with pytest.raises(ValueError, match='same length N'):
        causal_post_softmax_attention(q, k[..., :5, :], v[..., :5, :])
    with pytest.raises(ValueError, match='soft_rate'):
        causal_post_softmax_attention(q, k, v, soft_rate=1.5)
    with pytest.raises(TypeError, match='dtype'):
        causal_post_softmax_attention(q, k.float(), v)


def test_mask_helper():
    m = soft_causal_mask(4, 0.25)
    assert torch.equal(m, torch.tensor([[1, .25, .25, .25], [1, 1, .25, .25], [1, 1, 1, .25], [1, 1, 1, 1]]))


def test_traced_graph_uses_the_formula():
    q, k, v = (t.detach().float() for t in _qkv((1, 2, 20, 8)))
    traced = torch.jit.trace(lambda a, b, c: causal_post_softmax_attention(a, b, c), (q, k, v))
    q2, k2, v2 = (t.detach().float() for t in _qkv((1, 2, 33, 8), seed=3))
    torch.testing.assert_close(traced(q2, k2, v2), _official(q2, k2, v2, 8 ** -0.5), rtol=1e-5, atol=1e-5)

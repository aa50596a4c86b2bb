"""Tests of zoo.attention: the reference ops against hand computations, every other backend
available here against the reference (forward and gradients), and the backend dispatch.

xFormers is CUDA-only: its path is tested through a stand-in ``xformers`` module that follows
xFormers' documented conventions. The Triton kernel runs in Triton's CPU interpreter
(``TRITON_INTERPRET=1``), on tiny shapes because the interpreter is slow.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import zoo.attention as za
from zoo.attention import _backends
from zoo.attention import routed as routed_module
from zoo_testutils import FakeLowerTriangularMask, install_fake_xformers

ATOL, RTOL = 1e-5, 1e-4
HAS_NATTEN = _backends._unavailable_reason('natten', None) is None
HAS_TRITON = _backends._import_problem('triton', 'Triton', '', 'triton') is None


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without a backend chosen by the environment."""
    monkeypatch.delenv(za.ENV_VAR, raising=False)


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype)


def forward_and_grads(fn: Callable[..., torch.Tensor], tensors: list[torch.Tensor], seed: int = 0):
    """Run ``fn`` on fresh leaf copies of ``tensors``; return its output and their gradients."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    out = fn(*leaves)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves if t.is_floating_point()]


def assert_same_forward_and_grads(fn, ref_fn, tensors, atol: float = ATOL, rtol: float = RTOL) -> None:
    out, grads = forward_and_grads(fn, tensors)
    ref_out, ref_grads = forward_and_grads(ref_fn, tensors)
    torch.testing.assert_close(out, ref_out, atol=atol, rtol=rtol)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=atol, rtol=rtol)


# --- the reference against hand computations -------------------------------------------------


def test_reference_dense_matches_explicit_loops() -> None:
    torch.manual_seed(0)
    q, k, v = (
        randn(1, 1, 3, 2, dtype=torch.float64),
        randn(1, 1, 4, 2, dtype=torch.float64),
        randn(1, 1, 4, 3, dtype=torch.float64),
    )
    bias = randn(3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True], [False, False, False, True], [True, True, True, True]])
    out = za.dense_attention(q, k, v, attn_bias=bias, attn_mask=mask, scale=0.7, backend='reference')
    for i in range(3):
        logits = [0.7 * sum(q[0, 0, i, c] * k[0, 0, j, c] for c in range(2)) + bias[i, j] for j in range(4)]
        weights = [math.exp(logits[j]) if mask[i, j] else 0.0 for j in range(4)]
        expected = [sum(weights[j] * v[0, 0, j, c] for j in range(4)) / sum(weights) for c in range(3)]
        torch.testing.assert_close(out[0, 0, i], torch.tensor(expected, dtype=torch.float64))


def test_reference_dense_identities() -> None:
    torch.manual_seed(0)
    q, v = randn(2, 3, 5, 4), randn(2, 3, 6, 7)
    same_keys = randn(2, 3, 1, 4).expand(2, 3, 6, 4)
    # Identical keys get equal weights: the output is the mean of the values.
    out = za.dense_attention(q, same_keys, v, backend='reference')
    torch.testing.assert_close(out, v.mean(dim=2, keepdim=True).expand_as(out))
    # Causal: the first query sees the first key only.
    out = za.dense_attention(q, randn(2, 3, 6, 4), v, is_causal=True, backend='reference')
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])


def test_reference_window_with_one_window_equals_dense() -> None:
    torch.manual_seed(0)
    q, k, v = randn(2, 2, 3, 4, 5), randn(2, 2, 3, 4, 5), randn(2, 2, 3, 4, 6)
    bias = randn(2, 12, 12)
    out = za.window_attention(q, k, v, (3, 4), attn_bias=bias, backend='reference')
    flat = [t.flatten(2, 3) for t in (q, k, v)]
    expected = za.dense_attention(*flat, attn_bias=bias, backend='reference').reshape(2, 2, 3, 4, 6)
    torch.testing.assert_close(out, expected)


def test_reference_window_equals_dense_on_each_crop() -> None:
    """Checks the window numbering (row-major) that a per-window bias relies on."""
    torch.manual_seed(0)
    q, k, v = randn(1, 2, 4, 6, 3), randn(1, 2, 4, 6, 3), randn(1, 2, 4, 6, 5)
    wh, ww = 2, 3
    bias = randn(4, 2, wh * ww, wh * ww)  # (nW, heads, N, N) over a 2 x 2 grid of windows
    out = za.window_attention(q, k, v, (wh, ww), attn_bias=bias, backend='reference')
    for wy in range(2):
        for wx in range(2):
            crop = (slice(None), slice(None), slice(wy * wh, (wy + 1) * wh), slice(wx * ww, (wx + 1) * ww))
            flat = [t[crop].flatten(2, 3) for t in (q, k, v)]
            expected = za.dense_attention(*flat, attn_bias=bias[wy * 2 + wx], backend='reference')
            torch.testing.assert_close(out[crop], expected.reshape(1, 2, wh, ww, 5))


def test_reference_routed_with_all_regions_equals_dense() -> None:
    torch.manual_seed(0)
    B, h, R, n_q, n_k = 2, 2, 3, 4, 5
    q, k, v = randn(B, h, R, n_q, 6), randn(B, h, R, n_k, 6), randn(B, h, R, n_k, 3)
    # Every region selects every region, in a shuffled order: the softmax does not care.
    region_index = torch.stack([torch.randperm(R) for _ in range(B * R)]).reshape(B, R, R)
    out = za.routed_attention(q, k, v, region_index, backend='reference')
    expected = za.dense_attention(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3), backend='reference')
    torch.testing.assert_close(out, expected.reshape(B, h, R, n_q, 3))


def test_reference_routed_equals_dense_over_concatenated_regions() -> None:
    torch.manual_seed(0)
    B, h, R = 2, 2, 4
    q, k, v = randn(B, h, R, 3, 5), randn(B, h, R, 2, 5), randn(B, h, R, 2, 4)
    region_index = torch.tensor([[[1, 3], [0, 0], [2, 1], [3, 0]], [[2, 2], [1, 0], [0, 3], [3, 1]]])
    out = za.routed_attention(q, k, v, region_index, backend='reference')
    for b in range(B):
        for r in range(R):
            keys = torch.cat([k[b, :, i] for i in region_index[b, r]], dim=1)
            values = torch.cat([v[b, :, i] for i in region_index[b, r]], dim=1)
            expected = za.dense_attention(q[None, b, :, r], keys[None], values[None], backend='reference')
            torch.testing.assert_close(out[b, :, r], expected[0])


def test_reference_linear_matches_formula_by_loops() -> None:
    torch.manual_seed(0)
    n_q, n_k, d, dv = 3, 4, 2, 3
    q, k = (
        F.elu(randn(1, 1, n_q, d, dtype=torch.float64)) + 1,
        F.elu(randn(1, 1, n_k, d, dtype=torch.float64)) + 1,
    )
    q_norm, k_norm = q + 0.5, k * 2.0
    v = randn(1, 1, n_k, dv, dtype=torch.float64)
    out = za.linear_attention(q, k, v, q_norm=q_norm, k_norm=k_norm, eps=1e-3)
    k_mean = [sum(k_norm[0, 0, m, c] for m in range(n_k)) / n_k for c in range(d)]
    for i in range(n_q):
        z = 1.0 / (sum(q_norm[0, 0, i, c] * k_mean[c] for c in range(d)) + 1e-3)
        for c in range(dv):
            numerator = sum((q[0, 0, i] @ k[0, 0, m]) * v[0, 0, m, c] for m in range(n_k)) / n_k
            torch.testing.assert_close(out[0, 0, i, c], numerator * z)


def test_reference_linear_rank_augmentation_by_loops() -> None:
    torch.manual_seed(0)
    n_q, n_k, d, dv, scale = 3, 5, 2, 3, 0.7
    q = F.elu(randn(1, 1, n_q, d, dtype=torch.float64)) + 1
    k = F.elu(randn(1, 1, n_k, d, dtype=torch.float64)) + 1
    q_norm, k_norm = q + 0.5, k * 2.0
    v = randn(1, 1, n_k, dv, dtype=torch.float64)
    out = za.linear_attention(q, k, v, q_norm=q_norm, k_norm=k_norm, eps=1e-3,
                              rank_augmentation=True, scale=scale)
    q_mean = [sum(q_norm[0, 0, i, c] for i in range(n_q)) / n_q for c in range(d)]
    logits = [scale * sum(q_mean[c] * k_norm[0, 0, j, c] for c in range(d)) for j in range(n_k)]
    total = sum(math.exp(float(t)) for t in logits)
    a = [n_k * math.exp(float(t)) / total for t in logits]
    k_mean = [sum(a[j] * k_norm[0, 0, j, c] for j in range(n_k)) / n_k for c in range(d)]
    for i in range(n_q):
        z = 1.0 / (sum(q_norm[0, 0, i, c] * k_mean[c] for c in range(d)) + 1e-3)
        for c in range(dv):
            numerator = sum(a[j] * (q[0, 0, i] @ k[0, 0, j]) * v[0, 0, j, c] for j in range(n_k)) / n_k
            torch.testing.assert_close(out[0, 0, i, c], numerator * z)
    # default scale is head_dim ** -0.5; without the flag the scale is ignored (old behaviour)
    torch.testing.assert_close(
        za.linear_attention(q, k, v, rank_augmentation=True),
        za.linear_attention(q, k, v, rank_augmentation=True, scale=d ** -0.5))
    torch.testing.assert_close(za.linear_attention(q, k, v, scale=3.0), za.linear_attention(q, k, v))


def test_fully_masked_query_gives_zeros_and_finite_grads() -> None:
    torch.manual_seed(0)
    q, k, v = randn(1, 2, 3, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    for backend in ('reference', 'sdpa'):
        out, grads = forward_and_grads(
            lambda q, k, v, backend=backend: za.dense_attention(q, k, v, attn_mask=mask, backend=backend),
            [q, k, v],
        )
        assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
        assert all(torch.isfinite(g).all() for g in grads)


def test_dropout_is_random_but_seeded() -> None:
    q, k, v = randn(2, 2, 6, 4), randn(2, 2, 6, 4), randn(2, 2, 6, 4)
    for backend in ('reference', 'sdpa'):
        runs = []
        for _ in range(2):
            torch.manual_seed(1)
            runs.append(za.dense_attention(q, k, v, dropout_p=0.5, backend=backend))
        torch.testing.assert_close(runs[0], runs[1])
        assert not torch.allclose(runs[0], za.dense_attention(q, k, v, backend=backend))


# --- every backend against the reference ------------------------------------------------------

DENSE_CASES = {
    'plain': {},
    'bias': {'attn_bias': (2, 5, 7)},
    'broadcast-bias': {'attn_bias': (1, 1, 1, 7)},
    'mask': {'attn_mask': (2, 1, 5, 7)},
    'causal': {'is_causal': True},
    'bias+mask+causal': {'attn_bias': (2, 5, 7), 'attn_mask': (5, 7), 'is_causal': True},
}


def _dense_inputs(case: dict) -> tuple[list[torch.Tensor], dict]:
    torch.manual_seed(0)
    tensors = [randn(2, 2, 5, 4), randn(2, 2, 7, 4), randn(2, 2, 7, 3)]  # Nq != Nk, dv != d
    kwargs = {'is_causal': case.get('is_causal', False)}
    if 'attn_mask' in case:
        mask = torch.rand(case['attn_mask']) > 0.4
        mask[..., 0] = True  # keep a key for every query, whatever the causal mask does
        kwargs['attn_mask'] = mask
    if 'attn_bias' in case:
        tensors.append(randn(*case['attn_bias']))
    return tensors, kwargs


def _dense(backend: str, kwargs: dict) -> Callable[..., torch.Tensor]:
    def run(q, k, v, attn_bias=None):
        return za.dense_attention(q, k, v, attn_bias=attn_bias, backend=backend, **kwargs)

    return run


@pytest.mark.parametrize('case', list(DENSE_CASES))
def test_dense_sdpa_matches_reference(case: str) -> None:
    tensors, kwargs = _dense_inputs(DENSE_CASES[case])
    assert_same_forward_and_grads(_dense('sdpa', kwargs), _dense('reference', kwargs), tensors)


WINDOW_CASES = [
    # (H, W, window, bias shape or None)
    (6, 8, (3, 4), None),
    (6, 8, (3, 4), (2, 12, 12)),
    (6, 8, (2, 2), (12, 2, 4, 4)),
    (4, 6, (2, 3), (4, 1, 6, 6)),
]


@pytest.mark.parametrize('H, W, window, bias_shape', WINDOW_CASES)
def test_window_sdpa_matches_reference(H, W, window, bias_shape) -> None:
    torch.manual_seed(0)
    tensors = [randn(2, 2, H, W, 4), randn(2, 2, H, W, 4), randn(2, 2, H, W, 5)]
    if bias_shape is not None:
        tensors.append(randn(*bias_shape))

    def run(backend):
        return lambda q, k, v, bias=None: za.window_attention(
            q, k, v, window, attn_bias=bias, backend=backend
        )

    assert_same_forward_and_grads(run('sdpa'), run('reference'), tensors)


def _count_sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls[0] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', counting)
    return calls


def test_learned_finite_bias_on_cpu_skips_sdpa_math(monkeypatch: pytest.MonkeyPatch) -> None:
    # SDPA takes its math kernel (safe softmax) when the mask needs a gradient on CPU; a finite
    # learned bias (CrossFormer's position bias) is applied explicitly instead, same values and grads.
    calls = _count_sdpa_calls(monkeypatch)
    torch.manual_seed(0)
    q, k, v = randn(2, 2, 6, 8, 4), randn(2, 2, 6, 8, 4), randn(2, 2, 6, 8, 5)
    bias = randn(2, 12, 12)

    def window(backend):
        return lambda q, k, v, bias: za.window_attention(q, k, v, (3, 4), attn_bias=bias, backend=backend)

    def dense(backend):
        return lambda q, k, v, bias: za.dense_attention(q, k, v, attn_bias=bias, backend=backend)

    assert_same_forward_and_grads(window('sdpa'), window('reference'), [q, k, v, bias])
    flat = [t.flatten(2, 3) for t in (q, k, v)]
    assert_same_forward_and_grads(dense('sdpa'), dense('reference'), [*flat, randn(1, 2, 48, 48)])
    assert calls[0] == 0
    # a bias that needs no gradient, or no grad mode, keeps the fused kernel
    za.window_attention(q, k, v, (3, 4), attn_bias=bias)
    with torch.no_grad():
        za.window_attention(q, k, v, (3, 4), attn_bias=bias.requires_grad_())
    assert calls[0] == 2


def test_learned_bias_with_minus_inf_stays_on_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    # A row of -inf (every key masked) must still give zeros and finite gradients.
    calls = _count_sdpa_calls(monkeypatch)
    torch.manual_seed(0)
    q, k, v = randn(1, 2, 3, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4)
    bias = randn(2, 3, 5)
    bias[:, 1] = float('-inf')
    out, grads = forward_and_grads(lambda q, k, v, b: za.dense_attention(q, k, v, attn_bias=b), [q, k, v, bias])
    assert calls[0] == 1
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    assert all(torch.isfinite(g).all() for g in grads[:3])


ROUTED_SHAPES = dict(B=2, h=2, R=4, n_q=3, n_k=5, d=6, dv=4, topk=2)


def _routed_inputs(B, h, R, n_q, n_k, d, dv, topk, dtype=torch.float32):
    torch.manual_seed(0)
    tensors = [
        randn(B, h, R, n_q, d, dtype=dtype),
        randn(B, h, R, n_k, d, dtype=dtype),
        randn(B, h, R, n_k, dv, dtype=dtype),
    ]
    region_index = torch.stack([torch.randperm(R)[:topk] for _ in range(B * R)]).reshape(B, R, topk)
    return tensors, region_index


# ROUTED_DENSE_SHARE forcing each form of the SDPA routed op: gathered regions or a region mask.
ROUTED_FORMS = {'gathered': math.inf, 'masked': 0.0}


@pytest.mark.parametrize('form', ROUTED_FORMS)
def test_routed_sdpa_matches_reference(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routed_module, 'ROUTED_DENSE_SHARE', ROUTED_FORMS[form])
    tensors, region_index = _routed_inputs(**ROUTED_SHAPES)

    def run(backend):
        return lambda q, k, v: za.routed_attention(q, k, v, region_index, backend=backend)

    assert_same_forward_and_grads(run('sdpa'), run('reference'), tensors)


@pytest.mark.parametrize('form', ROUTED_FORMS)
def test_routed_sdpa_reads_region_major_views_in_place(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # BiFormer passes q, k and v as head-split views of one (B, R, N, 3 * heads * d) projection.
    # The SDPA path takes them as they are: the same result as contiguous copies, and its output
    # is a view of region-major rows as well.
    monkeypatch.setattr(routed_module, 'ROUTED_DENSE_SHARE', ROUTED_FORMS[form])
    torch.manual_seed(0)
    B, R, N, h, d, topk = 2, 9, 3, 2, 4, 3
    qkv = randn(B, R, N, 3 * h * d)
    q, k, v = (t.reshape(B, R, N, h, d).permute(0, 3, 1, 2, 4) for t in qkv.chunk(3, dim=-1))
    assert not q.is_contiguous()
    assert routed_module._region_rows(k).data_ptr() == k.data_ptr()  # no copy
    region_index = torch.stack([torch.randperm(R)[:topk] for _ in range(B * R)]).reshape(B, R, topk)
    out = za.routed_attention(q, k, v, region_index, backend='sdpa')
    expected = za.routed_attention(q.contiguous(), k.contiguous(), v.contiguous(), region_index, backend='reference')
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
    assert out.permute(0, 2, 3, 1, 4).is_contiguous()


def test_routed_sdpa_masks_only_dense_routing_within_the_budget() -> None:
    def masked(B, R, n, topk):
        q = torch.empty(B, 2, R, n, 8, device='meta')
        return routed_module._use_mask(q, q, topk)

    share = routed_module.ROUTED_DENSE_SHARE
    assert masked(32, 49, 4, 16)  # BiFormer stage 3 at 224x224
    assert not masked(32, 49, 16, 4) and not masked(32, 49, 64, 1)  # stages 2 and 1
    assert masked(1, 100, 1, math.ceil(share * 100)) and not masked(1, 100, 1, math.ceil(share * 100) - 1)
    # The float mask, (B * R * n) x (R * n) values of q's dtype, must fit in ROUTED_GATHER_BYTES.
    n = math.isqrt(routed_module.ROUTED_GATHER_BYTES // 4 // 64 ** 2)  # the most tokens per region at R = 64
    assert masked(1, 64, n, 64) and not masked(1, 64, n + 1, 64) and not masked(2, 64, n, 64)


def test_routed_sdpa_in_blocks_of_query_regions_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # With no byte budget beyond the size of k and v, each block gathers for B * R // topk query
    # regions: 2 images of 9 regions, topk 3 -> 3 blocks of 6, the middle one spanning both
    # images, forward and (recomputing) backward.
    monkeypatch.setattr(routed_module, 'ROUTED_GATHER_BYTES', 0)
    monkeypatch.setattr(routed_module, 'ROUTED_DENSE_SHARE', ROUTED_FORMS['gathered'])
    tensors, region_index = _routed_inputs(B=2, h=2, R=9, n_q=3, n_k=5, d=6, dv=4, topk=3)
    region_index[0] = region_index[0, 0]  # image 0: every query region selects the same regions
    assert routed_module._rows_per_block(*tensors[1:], topk=3) == 6

    def run(backend):
        return lambda q, k, v: za.routed_attention(q, k, v, region_index, backend=backend)

    assert_same_forward_and_grads(run('sdpa'), run('reference'), tensors)
    with torch.no_grad():
        torch.testing.assert_close(run('sdpa')(*tensors), run('reference')(*tensors), atol=ATOL, rtol=RTOL)


def test_linear_attention_has_no_sdpa_path() -> None:
    q = randn(1, 2, 4, 3)
    with pytest.raises(za.BackendNotSupported, match="linear_attention.*'reference'"):
        za.linear_attention(q, q, q, backend='sdpa')
    assert za.available_backends('linear_attention') == ['reference']


# --- NATTEN (its CPU forward runs here: Flex Attention) ----------------------------------------

needs_natten = pytest.mark.skipif(not HAS_NATTEN, reason="NATTEN is not installed (pip install 'zoo[natten]')")

NATTEN_WINDOW_CASES = [
    # (B, heads, H, W, window, head_dim): odd sizes, rectangular windows, several heads
    (2, 3, 6, 10, (2, 2), 8),
    (1, 2, 9, 15, (3, 5), 16),
    (2, 4, 7, 7, (7, 7), 32),  # one window over the map (LITv2's hi-fi windows at the last stage)
    (1, 1, 12, 8, (4, 2), 64),
]


@needs_natten
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('B, heads, H, W, window, d', NATTEN_WINDOW_CASES)
def test_window_natten_matches_reference(B, heads, H, W, window, d, dtype) -> None:
    """NATTEN's blocked attention (kernel_size = stride = window) is window attention."""
    g = torch.Generator().manual_seed(H * W + d)
    q, k, v = (torch.randn(B, heads, H, W, d, generator=g).to(dtype) for _ in range(3))
    with torch.no_grad():
        out = za.window_attention(q, k, v, window, backend='natten')
        expected = za.window_attention(q.float(), k.float(), v.float(), window, backend='reference')
    assert out.dtype == dtype and out.shape == expected.shape
    tol = {'atol': 1e-5, 'rtol': 1e-4} if dtype == torch.float32 else {'atol': 3e-2, 'rtol': 3e-2}
    torch.testing.assert_close(out.float(), expected, **tol)


def _natten_refusal_cases() -> list[tuple[str, Callable[[], torch.Tensor], str]]:
    q = randn(1, 2, 4, 4, 8)
    return [
        ('bias', lambda: za.window_attention(q, q, q, 2, attn_bias=randn(2, 4, 4), backend='natten'),
         "cannot apply an attention bias \\(NATTEN >= 0.20 has no additive or relative position bias\\)"),
        ('grad on cpu', lambda: za.window_attention(q.requires_grad_(), q, q, 2, backend='natten'),
         'is forward-only on cpu.*torch.no_grad\\(\\)'),
        ('float64', lambda: za.window_attention(q.double(), q.double(), q.double(), 2, backend='natten'),
         'takes float32, float16 and bfloat16, not torch.float64'),
        ('head dims', lambda: za.window_attention(q, q, randn(1, 2, 4, 4, 4), 2, backend='natten'),
         'needs one head_dim for q, k and v, got 8 for q/k and 4 for v'),
        ('cpu head dim', lambda: za.window_attention(*[randn(1, 2, 4, 4, 24)] * 3, 2, backend='natten'),
         'takes on cpu \\(Flex Attention\\) a power-of-two head_dim of at least 8, got 24'),
        ('empty batch', lambda: za.window_attention(*[randn(0, 2, 4, 4, 8)] * 3, 2, backend='natten'),
         'has no path for an empty batch'),
    ]


@needs_natten
@pytest.mark.parametrize('case', range(6), ids=[c[0] for c in _natten_refusal_cases()])
def test_natten_refuses_what_it_cannot_compute_exactly(case: int) -> None:
    _, call, reason = _natten_refusal_cases()[case]
    with pytest.raises(za.BackendNotSupported, match=f"window_attention: the 'natten' backend {reason}"):
        call()


@needs_natten
def test_natten_refusal_falls_back_under_a_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window with a bias (Swin-style) cannot run on NATTEN: the preference hands it to sdpa,
    with one warning that says why; a bias-free window runs on NATTEN without a warning."""
    monkeypatch.setattr(_backends, '_WARNED', set())
    q, bias = randn(1, 2, 4, 6, 8), randn(2, 4, 4)
    with torch.no_grad(), za.use_backend('natten'), za.record_ops() as calls:
        with pytest.warns(za.BackendFallbackWarning, match=(
            "for window_attention 'natten' cannot apply an attention bias.*runs on 'sdpa' instead"
        )):
            out = za.window_attention(q, q, q, 2, attn_bias=bias)
        with warnings.catch_warnings():
            warnings.simplefilter('error', za.BackendFallbackWarning)
            za.window_attention(q, q, q, 2)
    torch.testing.assert_close(out, za.window_attention(q, q, q, 2, attn_bias=bias, backend='reference'))
    assert calls == [('window_attention', 'sdpa'), ('window_attention', 'natten')]


def test_why_not_names_package_device_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.attention import routed, window
    q = randn(1, 2, 4, 4, 8)
    assert window.PATTERN.why_not('triton', None, q, q, q, (2, 2), attn_bias=None, scale=1.0).startswith(
        'does not implement window_attention')
    assert window.PATTERN.why_not('sdpa', q.device, q, q, q, (2, 2), attn_bias=None, scale=1.0) is None
    if HAS_NATTEN:
        assert window.PATTERN.why_not('natten', q.device, q, q, q, (2, 2), attn_bias=randn(2, 4, 4),
                                      scale=1.0).startswith("the 'natten' backend cannot apply an attention bias")
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    qr = q.flatten(2, 3).unflatten(2, (4, 4)).double()
    if HAS_TRITON:
        assert routed.PATTERN.why_not('triton', q.device, qr, qr, qr, torch.zeros(1, 4, 1, dtype=torch.long),
                                      scale=1.0) == ("the 'triton' backend kernel takes float32, float16 and "
                                                     "bfloat16, not torch.float64; use backend 'sdpa' or 'reference'")


# --- xFormers (CUDA only: a stand-in module checks our side of the call) ----------------------


@pytest.fixture
def fake_xformers(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A stand-in ``xformers`` (see ``zoo_testutils.install_fake_xformers``); the log of its calls."""
    return install_fake_xformers(monkeypatch)


@pytest.fixture
def xformers_on_cpu(fake_xformers, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The stand-in, with CPU tensors let through the device check to run our conversion code."""
    monkeypatch.setattr(_backends, '_cuda_problem', lambda backend, device: None)
    return fake_xformers


def test_xformers_refuses_cpu_tensors(fake_xformers) -> None:
    q = randn(1, 2, 4, 8)
    with pytest.raises(za.BackendUnavailable, match='needs a CUDA device and the tensors are on cpu'):
        za.dense_attention(q, q, q, backend='xformers')
    assert not fake_xformers


def test_xformers_listed_only_with_cuda(fake_xformers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert 'xformers' not in za.available_backends()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    for op in ('dense_attention', 'window_attention', 'grouped_attention'):
        assert 'xformers' in za.available_backends(op)
    assert 'xformers' not in za.available_backends('routed_attention')


@pytest.mark.parametrize('case', list(DENSE_CASES))
def test_dense_xformers_layout_and_masks(case: str, xformers_on_cpu) -> None:
    tensors, kwargs = _dense_inputs(DENSE_CASES[case])
    assert_same_forward_and_grads(_dense('xformers', kwargs), _dense('reference', kwargs), tensors)
    assert xformers_on_cpu[0]['shape'] == (2, 5, 2, 4)  # (B, Nq, heads, d)
    bias = xformers_on_cpu[0]['attn_bias']
    if case == 'causal':
        assert isinstance(bias, FakeLowerTriangularMask)
    elif case == 'plain':
        assert bias is None


@pytest.mark.parametrize('H, W, window, bias_shape', WINDOW_CASES)
def test_window_xformers_layout_and_masks(H, W, window, bias_shape, xformers_on_cpu) -> None:
    torch.manual_seed(0)
    tensors = [randn(2, 2, H, W, 4), randn(2, 2, H, W, 4), randn(2, 2, H, W, 5)]
    if bias_shape is not None:
        tensors.append(randn(*bias_shape))

    def run(backend):
        return lambda q, k, v, bias=None: za.window_attention(q, k, v, window, attn_bias=bias, backend=backend)

    assert_same_forward_and_grads(run('xformers'), run('reference'), tensors)
    n, n_windows = window[0] * window[1], (H // window[0]) * (W // window[1])
    call = xformers_on_cpu[0]
    if bias_shape is None:  # the windows end to end, one diagonal block each
        assert call['shape'] == (1, 2 * n_windows * n, 2, 4)
        assert call['attn_bias'].seqlens == [n] * (2 * n_windows)
    else:  # the windows along the batch, with a dense bias
        assert call['shape'] == (2 * n_windows, n, 2, 4)
        assert call['attn_bias'].shape == (2 * n_windows, 2, n, n)


# --- Triton (in Triton's CPU interpreter) -----------------------------------------------------


@pytest.fixture
def triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    kernels = sys.modules.get('zoo.attention.triton_kernels')
    if kernels is not None and not kernels.INTERPRETED:
        pytest.skip('the Triton kernel was compiled for the GPU earlier in this process')


@pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed')
@pytest.mark.usefixtures('triton_interpreter')
@pytest.mark.parametrize(
    'shapes',
    [
        dict(B=1, h=2, R=3, n_q=3, n_k=5, d=6, dv=4, topk=2),
        # 70 keys per region: two key blocks of 64, the second one mostly masked.
        dict(B=1, h=1, R=2, n_q=2, n_k=70, d=4, dv=3, topk=2),
    ],
    ids=['small', 'two-key-blocks'],
)
def test_routed_triton_matches_reference_float32(shapes: dict) -> None:
    tensors, region_index = _routed_inputs(**shapes)
    # A strided q (a transposed view) checks that the kernel honours strides.
    q = tensors[0].transpose(-2, -1).contiguous().transpose(-2, -1)

    def run(backend):
        return lambda q, k, v: za.routed_attention(q, k, v, region_index, backend=backend)

    assert_same_forward_and_grads(run('triton'), run('reference'), [q, *tensors[1:]])


@pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed')
@pytest.mark.usefixtures('triton_interpreter')
def test_routed_triton_float16_forward() -> None:
    (q, k, v), region_index = _routed_inputs(
        B=1, h=1, R=3, n_q=4, n_k=3, d=8, dv=8, topk=3, dtype=torch.float16
    )
    out = za.routed_attention(q, k, v, region_index, backend='triton')
    expected = za.routed_attention(q.float(), k.float(), v.float(), region_index, backend='reference')
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed')
@pytest.mark.usefixtures('triton_interpreter')
def test_routed_triton_backward_reads_regions_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # Regions selected by several query regions get their dk/dv from each of them; nothing
    # gathers (torch.gather would raise) in the forward or the backward kernel.
    tensors, region_index = _routed_inputs(B=2, h=2, R=4, n_q=5, n_k=17, d=8, dv=6, topk=3)
    region_index[0] = torch.tensor([0, 1, 2])
    expected = forward_and_grads(lambda q, k, v: za.routed_attention(q, k, v, region_index, backend='reference'),
                                 tensors)

    def no_gather(*args, **kwargs):
        raise AssertionError('the triton path gathered the selected regions')

    monkeypatch.setattr(torch, 'gather', no_gather)
    out, grads = forward_and_grads(lambda q, k, v: za.routed_attention(q, k, v, region_index, backend='triton'),
                                   tensors)
    torch.testing.assert_close(out, expected[0], atol=ATOL, rtol=RTOL)
    for grad, ref_grad in zip(grads, expected[1], strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(not HAS_TRITON, reason='triton is not installed')
def test_triton_needs_cuda_or_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    (q, k, v), region_index = _routed_inputs(**ROUTED_SHAPES)
    with pytest.raises(
        za.BackendUnavailable, match='needs a CUDA device and the tensors are on cpu.*TRITON_INTERPRET=1'
    ):
        za.routed_attention(q, k, v, region_index, backend='triton')
    assert 'triton' not in za.available_backends()


def test_triton_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'triton', None)
    (q, k, v), region_index = _routed_inputs(**ROUTED_SHAPES)
    with pytest.raises(
        za.BackendUnavailable, match='needs Triton, which is not installed: pip install triton'
    ):
        za.routed_attention(q, k, v, region_index, backend='triton')


# --- dispatch ---------------------------------------------------------------------------------


def test_default_backends() -> None:
    assert {op: za.get_backend(op) for op in za.list_ops()} == {
        'dense_attention': 'sdpa',
        'window_attention': 'sdpa',
        'grouped_attention': 'sdpa',
        'routed_attention': 'sdpa',
        'linear_attention': 'reference',
        'halo_attention': 'sdpa',
        'causal_post_softmax_attention': 'sdpa',
        'gather_attention': 'reference',
        'infuse_attention': 'reference',
    }


def test_selection_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend= > use_backend() > $ZOO_ATTENTION_BACKEND > the op's default, on real calls."""
    from zoo.attention import window
    seen: list[str] = []
    for name in ('reference', 'sdpa'):
        original = window.PATTERN.paths[name]

        def spy(*args, _name=name, _original=original, **kwargs):
            seen.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setitem(window.PATTERN.paths, name, spy)
    q = randn(1, 1, 2, 2, 4)

    def call(backend=None):
        za.window_attention(q, q, q, 2, backend=backend)
        return seen.pop()

    assert call() == 'sdpa'
    monkeypatch.setenv(za.ENV_VAR, 'reference')
    assert call() == 'reference' and za.get_backend('window_attention') == 'reference'
    with za.use_backend('sdpa'):
        assert call() == 'sdpa'
        assert call(backend='math') == 'reference'
    assert call() == 'reference'


def test_use_backend_nests_and_restores() -> None:
    with za.use_backend('reference'):
        assert za.get_backend('dense_attention') == 'reference'
        with za.use_backend('sdpa'):
            assert za.get_backend('dense_attention') == 'sdpa'
            with za.use_backend(None):
                assert za.get_backend('linear_attention') == 'reference'
                assert za.get_backend('dense_attention') == 'sdpa'  # the default
        assert za.get_backend('dense_attention') == 'reference'
    assert za._backends._SCOPED.get() is None


def test_use_backend_is_per_thread() -> None:
    seen = []
    with za.use_backend('reference'):
        thread = threading.Thread(target=lambda: seen.append(za.get_backend('dense_attention')))
        thread.start()
        thread.join()
    assert seen == ['sdpa']


def test_preference_list_picks_the_first_backend_that_runs_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backends, '_WARNED', set())
    monkeypatch.setenv('TRITON_INTERPRET', '1')  # triton can run here (if installed)
    with za.use_backend('triton, sdpa'):
        assert za.get_backend('routed_attention') == ('triton' if HAS_TRITON else 'sdpa')
        assert za.get_backend('dense_attention') == 'sdpa'
        # A preference: no listed backend implements the op, so it gets its default.
        assert za.get_backend('linear_attention') == 'reference'
    monkeypatch.delenv('TRITON_INTERPRET')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with za.use_backend('triton, sdpa'):  # triton cannot run here: the next listed backend
        assert za.get_backend('routed_attention') == 'sdpa'
    assert not _backends._WARNED  # get_backend only asks; calls warn


def test_unknown_backend_names(monkeypatch: pytest.MonkeyPatch) -> None:
    q = randn(1, 1, 2, 4)
    valid = "'reference' \\(alias 'math'\\), 'sdpa', 'natten', 'xformers', 'triton'"
    with pytest.raises(ValueError, match=f"unknown attention backend 'flash'.*backend= argument.*{valid}"):
        za.dense_attention(q, q, q, backend='flash')
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'.*use_backend"):
        with za.use_backend('cudnn'):
            pass
    monkeypatch.setenv(za.ENV_VAR, 'fast')
    with pytest.raises(ValueError, match=f"'fast' \\(from \\${za.ENV_VAR}\\)"):
        za.dense_attention(q, q, q)
    with pytest.raises(ValueError, match='unknown attention op'):
        za.available_backends('flash_attention')


@pytest.mark.parametrize(
    'call, message',
    [
        (
            lambda q: za.window_attention(q, q, q, 2, backend='triton'),
            "window_attention is not implemented by backend 'triton'.*'reference' \\(alias 'math'\\), 'sdpa', "
            "'natten', 'xformers'",
        ),
        (lambda q: za.routed_attention(q, q, q, torch.zeros(1, 4, 1, dtype=torch.long), backend='xformers'),
         "routed_attention .*'reference'.*'sdpa'.*'triton'"),
        (lambda q: za.linear_attention(q[0], q[0], q[0], backend='natten'), "linear_attention .*'reference'"),
    ],
)
def test_backend_that_does_not_implement_the_op(call, message) -> None:
    q = randn(1, 1, 4, 4, 4)
    with pytest.raises(za.BackendNotSupported, match=message) as info:
        call(q)
    assert isinstance(info.value, ValueError)


def test_not_implemented_from_context_and_env_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A global setting is a preference: the op runs on its default, with one warning."""
    monkeypatch.setattr(_backends, '_WARNED', set())
    q = randn(1, 1, 4, 4, 4)
    expected = za.window_attention(q, q, q, 2, backend='sdpa')
    with za.use_backend('triton'):
        with pytest.warns(za.BackendFallbackWarning, match=(
            "use_backend\\(\\) prefers backend 'triton', but for window_attention 'triton' does not "
            "implement window_attention.*runs on 'sdpa' instead"
        )):
            torch.testing.assert_close(za.window_attention(q, q, q, 2), expected, atol=0, rtol=0)
        with warnings.catch_warnings():
            warnings.simplefilter('error', za.BackendFallbackWarning)  # once per op and setting
            za.window_attention(q, q, q, 2)
    monkeypatch.setenv(za.ENV_VAR, 'xformers')
    with pytest.warns(za.BackendFallbackWarning, match=f'\\${za.ENV_VAR} prefers backend .xformers.'):
        torch.testing.assert_close(za.window_attention(q, q, q, 2), expected, atol=0, rtol=0)


def test_missing_natten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'natten', None)
    monkeypatch.setitem(sys.modules, 'natten.functional', None)
    q = randn(1, 1, 4, 4, 8)
    with pytest.raises(
        za.BackendUnavailable, match="needs NATTEN, which is not installed: pip install 'zoo\\[natten\\]'"
    ) as info:
        za.window_attention(q, q, q, 2, backend='natten')
    assert isinstance(info.value, RuntimeError)
    assert 'natten' not in za.available_backends()


def test_missing_xformers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'xformers', None)
    monkeypatch.setitem(sys.modules, 'xformers.ops', None)
    q = randn(1, 1, 4, 8)
    with pytest.raises(
        za.BackendUnavailable, match="needs xFormers, which is not installed: pip install 'zoo\\[xformers\\]'"
    ):
        za.dense_attention(q, q, q, backend='xformers')


class _BrokenNattenFinder:
    """An import hook failing like an extension built against another torch."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'natten':
            raise OSError('undefined symbol: _ZN2at4_ops')
        return None


def test_broken_install_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, 'meta_path', [_BrokenNattenFinder(), *sys.meta_path])
    for name in [m for m in sys.modules if m.split('.')[0] == 'natten']:
        monkeypatch.delitem(sys.modules, name)
    message = _backends._unavailable_reason('natten', None)
    assert 'could not import NATTEN (OSError: undefined symbol' in message
    assert f'built for torch {torch.__version__}' in message


def test_available_backends() -> None:
    available = za.available_backends()
    assert available[:2] == ['reference', 'sdpa']
    assert set(available) <= set(za.BACKENDS)
    assert za.available_backends('routed_attention')[:2] == ['reference', 'sdpa']
    assert za.available_backends('halo_attention') == ['reference', 'sdpa']
    assert ('natten' in za.available_backends('window_attention')) == HAS_NATTEN
    assert ('natten' in za.available_backends('grouped_attention')) == HAS_NATTEN
    assert 'natten' not in za.available_backends('dense_attention')


def test_import_does_not_import_optional_packages() -> None:
    package_dir = Path(za.__file__).resolve().parent.parent
    # A stand-in parent package: zoo/__init__ itself imports timm, which imports triton.
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('zoo'); pkg.__path__ = [{str(package_dir)!r}]; sys.modules['zoo'] = pkg\n"
        "import zoo.attention\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('triton', 'natten', 'xformers')"
        " or m == 'zoo.attention.triton_kernels'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'


# --- meta device and torch.compile ----------------------------------------------------------


def _all_ops(q5: torch.Tensor, rpb: torch.Tensor, region_index: torch.Tensor) -> list[torch.Tensor]:
    """Every op once, on (B, heads, 4, 4, d) maps (4 regions of 4 tokens for the routed op)."""
    q4, qr = q5.flatten(2, 3), q5.flatten(2, 3).unflatten(2, (4, 4))
    mask = torch.ones(16, 16, dtype=torch.bool, device=q5.device)
    return [
        za.dense_attention(
            q4, q4, q4, attn_bias=rpb[:1, :4, :4].repeat(1, 4, 4), attn_mask=mask, is_causal=True
        ),
        za.window_attention(q5, q5, q5, 2, attn_bias=rpb[:, :4, :4]),
        za.grouped_attention(q5, q5, q5, 2, interval=2, attn_bias=rpb[:, :4, :4]),
        za.routed_attention(qr, qr, qr, region_index),
        za.linear_attention(q4.relu(), q4.relu(), q4),
    ]


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
def test_ops_run_on_the_meta_device(backend: str) -> None:
    """FLOP counting builds models on 'meta': the ops must work there, without reading values."""
    meta = torch.device('meta')
    q5, rpb = torch.empty(2, 2, 4, 4, 8, device=meta), torch.empty(2, 5, 5, device=meta)
    with za.use_backend(f'{backend},reference'):
        outs = _all_ops(q5, rpb, torch.empty(2, 4, 2, dtype=torch.long, device=meta))
    assert [tuple(o.shape) for o in outs] == [
        (2, 2, 16, 8),
        (2, 2, 4, 4, 8),
        (2, 2, 4, 4, 8),
        (2, 2, 4, 4, 8),
        (2, 2, 16, 8),
    ]


def test_ops_compile_without_graph_breaks() -> None:
    torch.manual_seed(0)
    q5, rpb = randn(1, 2, 4, 4, 8), randn(2, 5, 5)
    region_index = torch.tensor([[[0, 1], [1, 2], [3, 2], [0, 3]]])
    compiled = torch.compile(_all_ops, backend='eager', fullgraph=True)
    for out, expected in zip(compiled(q5, rpb, region_index), _all_ops(q5, rpb, region_index), strict=True):
        torch.testing.assert_close(out, expected)


# --- input validation -------------------------------------------------------------------------

_q4, _k4 = randn(2, 2, 5, 4), randn(2, 2, 7, 4)
_q5 = randn(2, 2, 6, 8, 4)
_qr, _kr = randn(2, 2, 4, 3, 4), randn(2, 2, 4, 5, 4)
_index = torch.zeros(2, 4, 2, dtype=torch.long)


@pytest.mark.parametrize(
    'call, error, message',
    [
        (
            lambda: za.dense_attention(_q4[0], _k4, _k4),
            ValueError,
            'q must be 4-D \\(B, heads, N, head_dim\\), got shape \\(2, 5, 4\\)',
        ),
        (lambda: za.dense_attention(_q4, randn(2, 2, 7, 3), _k4), ValueError, 'same head_dim'),
        (
            lambda: za.dense_attention(_q4, randn(1, 2, 7, 4), randn(1, 2, 7, 4)),
            ValueError,
            'agree on the first 2 dims',
        ),
        (lambda: za.dense_attention(_q4, _k4, randn(2, 2, 6, 4)), ValueError, 'k and v must agree'),
        (lambda: za.dense_attention(_q4.long(), _k4.long(), _k4.long()), TypeError, 'floating dtype'),
        (lambda: za.dense_attention(_q4, _k4.double(), _k4), TypeError, 'one dtype'),
        (lambda: za.dense_attention(_q4, _k4, _k4, attn_mask=torch.ones(5, 7)), TypeError, 'bool tensor'),
        (
            lambda: za.dense_attention(_q4, _k4, _k4, attn_bias=randn(5, 6)),
            ValueError,
            'does not broadcast to \\(B, heads, Nq, Nk\\)',
        ),
        (lambda: za.dense_attention(_q4, _k4, _k4, dropout_p=1.0), ValueError, 'dropout_p'),
        (
            lambda: za.window_attention(_q5, _q5, _q5, (4, 3)),
            ValueError,
            'H x W = 6 x 8 is not a multiple of the window 4 x 3.*pad',
        ),
        (lambda: za.window_attention(_q5, _q5, _q5, 0), ValueError, 'positive int'),
        (
            lambda: za.window_attention(_q5, _q5, _q5, 2, attn_bias=randn(2, 5, 4)),
            ValueError,
            'does not broadcast',
        ),
        (
            lambda: za.window_attention(_q5, _q5, _q5, 2, attn_bias=randn(4, 4)),
            ValueError,
            '\\(heads, N, N\\) or \\(nW, heads, N, N\\)',
        ),
        (
            lambda: za.window_attention(_q5, randn(2, 2, 6, 7, 4), randn(2, 2, 6, 7, 4), 2),
            ValueError,
            'first 4 dims',
        ),
        (
            lambda: za.grouped_attention(_q5, _q5, _q5, 2, attn_bias=randn(2, 3, 3)),
            ValueError,
            'grouped_attention: attn_bias of shape \\(2, 3, 3\\) does not broadcast to \\(heads, N, N\\)',
        ),
        (lambda: za.grouped_attention(_q5, _q5, _q5.int(), 2), TypeError, 'floating dtype'),
        (lambda: za.routed_attention(_qr, _kr, _kr, _index.float()), TypeError, 'integer tensor'),
        (
            lambda: za.routed_attention(_qr, _kr, _kr, _index[:, :3]),
            ValueError,
            '\\(B, R, topk\\) = \\(2, 4, topk >= 1\\)',
        ),
        (
            lambda: za.routed_attention(_qr, _kr, _kr, _index + 4),
            ValueError,
            'in \\[0, R\\) = \\[0, 4\\), got \\[4, 4\\]',
        ),
        (lambda: za.routed_attention(_qr, _kr, _kr, _index - 1), ValueError, 'got \\[-1, -1\\]'),
        (lambda: za.linear_attention(_q4, _k4, _k4, q_norm=_k4), ValueError, 'q_norm must be shaped like q'),
    ],
)
def test_invalid_inputs(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_bias_is_cast_to_the_query_dtype() -> None:
    q = randn(1, 2, 3, 4, dtype=torch.float64)
    bias = randn(2, 3, 3)
    out = za.dense_attention(q, q, q, attn_bias=bias)
    torch.testing.assert_close(out, za.dense_attention(q, q, q, attn_bias=bias.double(), backend='reference'))


def test_int32_region_index_is_accepted() -> None:
    (q, k, v), region_index = _routed_inputs(**ROUTED_SHAPES)
    torch.testing.assert_close(
        za.routed_attention(q, k, v, region_index.int()), za.routed_attention(q, k, v, region_index)
    )


def test_low_rank_bias_keeps_the_fused_cpu_kernel() -> None:
    # A (heads, N, M) bias broadcasts like (1, heads, N, M), but SDPA's fused CPU kernel takes
    # only masks of q's rank; the SDPA backend adds the leading dims itself.
    from zoo.profiling import kernels_used
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 49, 32) for _ in range(3))
    bias = torch.randn(4, 49, 49)
    ran = kernels_used(lambda x: za.dense_attention(x, k, v, attn_bias=bias), q)
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in ran, ran
    expected = za.dense_attention(q, k, v, attn_bias=bias, backend='reference')
    torch.testing.assert_close(za.dense_attention(q, k, v, attn_bias=bias), expected, rtol=1e-5, atol=1e-5)

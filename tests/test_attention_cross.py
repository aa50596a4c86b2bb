"""LookupViT's bidirectional cross-attention (zoo.attention.gather_attention / infuse_attention)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.attention import dense_attention, gather_attention, infuse_attention


def _loop_reference(q, k, v_l, v_c, scale):
    # Written out per batch, head and query with Python sums: the paper's MHBC, both directions.
    B, h, M, d = q.shape
    N = k.shape[2]
    out_c = torch.zeros(B, h, M, v_l.shape[-1], dtype=torch.float64)
    out_l = torch.zeros(B, h, N, v_c.shape[-1], dtype=torch.float64)
    for b in range(B):
        for j in range(h):
            weights = torch.zeros(M, N, dtype=torch.float64)
            for m in range(M):
                logits = [float(q[b, j, m] @ k[b, j, n]) * scale for n in range(N)]
                top = max(logits)
                exps = [math.exp(x - top) for x in logits]
                weights[m] = torch.tensor(exps, dtype=torch.float64) / sum(exps)
            out_c[b, j] = weights @ v_l[b, j].double()
            for n in range(N):
                out_l[b, j, n] = sum(weights[m, n] * v_c[b, j, m].double() for m in range(M))
    return out_c, out_l


def _tensors(B, h, M, N, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, h, M, d, generator=g, dtype=dtype)
    k = torch.randn(B, h, N, d, generator=g, dtype=dtype)
    v_l = torch.randn(B, h, N, d, generator=g, dtype=dtype)
    v_c = torch.randn(B, h, M, d, generator=g, dtype=dtype)
    return q, k, v_l, v_c


@pytest.mark.parametrize('shape', [(2, 3, 4, 9, 8), (1, 2, 9, 5, 4), (1, 1, 1, 7, 16)])
def test_both_directions_match_the_written_out_formula(shape):
    q, k, v_l, v_c = _tensors(*shape)
    scale = shape[-1] ** -0.5
    out_c, weights = gather_attention(q, k, v_l)
    out_l = infuse_attention(weights, v_c)
    ref_c, ref_l = _loop_reference(q, k, v_l, v_c, scale)
    torch.testing.assert_close(out_c, ref_c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out_l, ref_l, rtol=1e-10, atol=1e-10)
    # the weights are a distribution over the lookup tokens, NOT over the compressed ones
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:3], dtype=weights.dtype))
    assert not torch.allclose(weights.sum(-2), torch.ones(weights.shape[:2] + weights.shape[3:], dtype=weights.dtype))


@pytest.mark.parametrize('M, N', [(9, 196), (100, 196), (49, 3), (1, 50)])
def test_gather_equals_sdpa_with_different_query_and_key_lengths(M, N):
    # dense_attention (SDPA) handles q and k/v of different lengths: the gather output equals it.
    q, k, v_l, _ = _tensors(2, 4, M, N, 16, dtype=torch.float32)
    out, _ = gather_attention(q, k, v_l, scale=0.2)
    for backend in ('sdpa', 'reference'):
        torch.testing.assert_close(out, dense_attention(q, k, v_l, scale=0.2, backend=backend),
                                   rtol=1e-5, atol=1e-6)


def test_gradients_flow_to_every_input():
    q, k, v_l, v_c = (t.requires_grad_() for t in _tensors(1, 2, 3, 5, 4))
    out_c, weights = gather_attention(q, k, v_l)
    (out_c.square().sum() + infuse_attention(weights, v_c).square().sum()).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v_l, v_c))
    assert torch.autograd.gradcheck(lambda *t: infuse_attention(gather_attention(*t[:3])[1], t[3]),
                                    (q, k, v_l, v_c))


def test_low_precision_softmax_in_float32():
    q, k, v_l, _ = _tensors(1, 2, 4, 64, 8, dtype=torch.float32, seed=3)
    q = q * 8  # sharp logits
    out, weights = gather_attention(q.bfloat16(), k.bfloat16(), v_l.bfloat16())
    ref, _ = gather_attention(q.bfloat16().float(), k.bfloat16().float(), v_l.bfloat16().float())
    assert out.dtype == weights.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_bad_shapes_are_rejected():
    q, k, v_l, v_c = _tensors(1, 2, 3, 5, 4)
    with pytest.raises(ValueError, match='incompatible'):
        gather_attention(q, k[:, :1], v_l)
    with pytest.raises(ValueError, match='4-D'):
        gather_attention(q[0], k, v_l)
    _, weights = gather_attention(q, k, v_l)
    with pytest.raises(ValueError, match='share'):
        infuse_attention(weights, v_c[:, :, :2])
    with pytest.raises(TypeError, match='floating'):
        infuse_attention(weights, v_c.long())

"""zoo.attention.grouped_attention (SDA/LDA groups on maps of any size) and the dynamic
position bias layer (zoo.layers.DynamicPositionBias) with its eval-mode cache."""
from __future__ import annotations

import itertools

import pytest
import torch

import zoo.attention as za
from zoo.attention.grouped import grouped_attention, grouped_attention_reference, strided_group_size
from zoo.layers.dynamic_position_bias import DynamicPositionBias, relative_position_index


def _qkv(B, heads, H, W, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, heads, H, W, d, generator=g) for _ in range(3)]


CASES = [
    # (H, W, group, interval)
    (14, 14, (7, 7), 1),    # SDA, divisible
    (10, 17, (4, 4), 1),    # SDA, padded
    (16, 16, (4, 4), 2),    # LDA, divisible
    (13, 22, (3, 3), 2),    # LDA, padded
    (9, 31, (2, 3), 4),     # LDA, padded, rectangular group
    (5, 11, (5, 11), 1),    # one group over the whole map
]


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
@pytest.mark.parametrize('H, W, group, interval', CASES)
def test_matches_dense_attention_over_the_real_tokens_of_each_group(backend, H, W, group, interval):
    q, k, v = _qkv(2, 3, H, W, 8)
    n = group[0] * group[1]
    bias = torch.randn(3, n, n, generator=torch.Generator().manual_seed(1))
    expected = grouped_attention_reference(q, k, v, group, interval=interval, attn_bias=bias)
    got = grouped_attention(q, k, v, group, interval=interval, attn_bias=bias, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    got = grouped_attention(q, k, v, group, interval=interval, backend=backend)
    torch.testing.assert_close(got, grouped_attention_reference(q, k, v, group, interval=interval),
                               atol=1e-5, rtol=1e-4)


def test_group_membership_by_hand():
    # Uniform attention (q = 0) with one-hot values: every output is the mean of the one-hot
    # vectors of its group's real tokens, so the groups can be read off the output.
    H, W, G, I = 5, 5, 2, 2  # padded to 8 x 8: blocks of 4 x 4, groups of tokens 2 apart
    q = torch.zeros(1, 1, H, W, 4)
    k = torch.randn(1, 1, H, W, 4)
    v = torch.eye(H * W).reshape(1, 1, H, W, H * W)
    out = grouped_attention(q, k, v, G, interval=I)[0, 0].reshape(H * W, H * W)

    def members(y, x):
        return {(a, b) for a, b in itertools.product(range(H), range(W))
                if a // 4 == y // 4 and b // 4 == x // 4 and a % 2 == y % 2 and b % 2 == x % 2}

    assert members(0, 1) == {(0, 1), (0, 3), (2, 1), (2, 3)}
    assert members(4, 4) == {(4, 4)}  # its group mates are all padding
    for y, x in itertools.product(range(H), range(W)):
        group = members(y, x)
        expected = torch.zeros(H * W)
        for a, b in group:
            expected[a * W + b] = 1 / len(group)
        torch.testing.assert_close(out[y * W + x], expected)


def test_padding_values_do_not_reach_real_tokens_and_gradients_agree():
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 11, 9, 4))
    bias = torch.randn(2, 16, 16)
    outs, grads = [], []
    for backend in ('reference', 'sdpa'):
        out = grouped_attention(q, k, v, 4, interval=2, attn_bias=bias, backend=backend)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert all(torch.isfinite(g).all() for g in grads[1])


def _v1_lda_by_hand(q, k, v, interval, bias):
    """CrossFormer v1's long-distance attention written out from its description (branch
    crossformer, models/crossformer_backbone.py): a group is every token with the same (row mod
    I, column mod I) in the whole map; a token's place in it is (row // I, column // I) of a
    ceil(H / I) x ceil(W / I) group; padded tokens never appear."""
    B, heads, H, W, d = q.shape
    gh, gw = -(-H // interval), -(-W // interval)
    tokens = [(y, x) for y in range(H) for x in range(W)]
    same = torch.tensor([[(y % interval, x % interval) == (a % interval, b % interval) for (a, b) in tokens]
                         for (y, x) in tokens])
    place = torch.tensor([(y // interval) * gw + x // interval for (y, x) in tokens])
    assert bias.shape[-1] == gh * gw
    logits = q.reshape(B, heads, H * W, d) @ k.reshape(B, heads, H * W, d).transpose(-1, -2) * d ** -0.5
    logits = logits + bias[:, place[:, None], place[None, :]]
    out = logits.masked_fill(~same, float('-inf')).softmax(-1) @ v.reshape(B, heads, H * W, -1)
    return out.reshape(B, heads, H, W, -1)


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
@pytest.mark.parametrize('H, W, interval', [(16, 24, 8), (13, 22, 4), (9, 31, 2), (6, 13, 1)])
def test_v1_strided_groups_over_the_whole_map(backend, H, W, interval):
    # One block over the map padded to a multiple of I: I x I groups spanning the whole map.
    group = strided_group_size((H, W), interval)
    assert group == (-(-H // interval), -(-W // interval))
    q, k, v = _qkv(2, 3, H, W, 8, seed=3)
    n = group[0] * group[1]
    bias = torch.randn(3, n, n, generator=torch.Generator().manual_seed(4))
    expected = _v1_lda_by_hand(q, k, v, interval, bias)
    got = grouped_attention(q, k, v, group, interval=interval, attn_bias=bias, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grouped_attention_reference(q, k, v, group, interval=interval, attn_bias=bias),
                               expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('H, W', [(13, 22), (16, 24)])  # padded to 16 x 24 (window path); whole map
def test_v1_strided_groups_gradients_agree_between_backends(H, W):
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, H, W, 4, seed=5))
    group = strided_group_size((H, W), 4)
    bias = torch.randn(2, group[0] * group[1], group[0] * group[1], requires_grad=True)
    results = []
    for backend in ('reference', 'sdpa'):
        out = grouped_attention(q, k, v, group, interval=4, attn_bias=bias, backend=backend)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v, bias))
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    for a, b in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_bad_arguments():
    q, k, v = _qkv(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match='group_size'):
        grouped_attention(q, k, v, 0)
    with pytest.raises(ValueError, match='interval'):
        grouped_attention(q, k, v, 2, interval=0)
    with pytest.raises(ValueError, match='5-D'):
        grouped_attention(q[0], k[0], v[0], 2)
    with pytest.raises(za.BackendNotSupported):
        grouped_attention(q, k, v, 2, backend='natten')


# --- dynamic position bias --------------------------------------------------------------------


def _official_bias(dpb: DynamicPositionBias, G: int) -> torch.Tensor:
    """The official construction, written out with loops: coordinates (dy, dx) row-major over
    [1-G, G-1]^2, index (dy + G - 1) * (2G - 1) + (dx + G - 1) for query i, key j."""
    coords = torch.tensor([[dy, dx] for dy in range(1 - G, G) for dx in range(1 - G, G)], dtype=torch.float32)
    table = dpb.pos3(dpb.pos2(dpb.pos1(dpb.pos_proj(coords))))
    tokens = [(y, x) for y in range(G) for x in range(G)]
    index = torch.tensor([[(yi - yj + G - 1) * (2 * G - 1) + (xi - xj + G - 1) for (yj, xj) in tokens]
                          for (yi, xi) in tokens])
    return table[index].permute(2, 0, 1)


def test_bias_matches_the_official_construction():
    torch.manual_seed(0)
    dpb = DynamicPositionBias(6, 3).eval()
    with torch.no_grad():
        for G in (1, 4, 7):
            torch.testing.assert_close(dpb(G), _official_bias(dpb, G))
    # rectangular groups: a (2*2-1) x (2*3-1) table; query (0, 0) sees keys at offsets
    # dy = 0, -1 and dx = 0, -1, -2, i.e. rows 1, 0 and columns 2, 1, 0 of the table
    assert relative_position_index((2, 3)).tolist()[0] == [7, 6, 5, 2, 1, 0]


def test_cache_per_group_device_dtype_and_invalidation():
    torch.manual_seed(0)
    dpb = DynamicPositionBias(4, 2).eval()
    calls = []
    dpb.pos_proj.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        a = dpb(7)
        assert dpb(7) is a and len(calls) == 1
        b = dpb(7, dtype=torch.float64)
        assert b.dtype == torch.float64 and len(calls) == 2
        dpb((3, 5))
        assert dpb((3, 5)) is not a and len(calls) == 3
        # an in-place weight change (optimizer step, load_state_dict) invalidates the cache
        dpb.pos3[2].bias.add_(1.0)
        c = dpb(7)
        assert c is not a and len(calls) == 4
        torch.testing.assert_close(c, a + 1.0)
        dpb.load_state_dict({k: v.clone() for k, v in dpb.state_dict().items()})
        assert dpb(7) is not c
        torch.testing.assert_close(dpb(7), c)
    # gradients needed: computed fresh, connected to the weights, never cached
    grads_before = len(calls)
    out = dpb(7)
    assert out.requires_grad and len(calls) == grads_before + 1
    # training mode: never cached, and the eval cache is dropped
    dpb.train()
    assert not dpb._cache
    with torch.no_grad():
        x, y = dpb(7), dpb(7)
    assert x is not y
    dpb.eval()
    with torch.no_grad():
        torch.testing.assert_close(dpb(7), x)
    # a dtype change replaces the weights: recomputed in the new dtype
    dpb.double()
    with torch.no_grad():
        assert dpb(7).dtype == torch.float64
        torch.testing.assert_close(dpb(7).float(), x)


# --- NATTEN and xFormers paths ----------------------------------------------------------------

HAS_NATTEN = za.backend_status('grouped_attention')['natten'] is None


@pytest.mark.skipif(not HAS_NATTEN, reason="NATTEN is not installed (pip install 'zoo[natten]')")
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('B, heads, H, W, group, interval', [
    (2, 3, 14, 14, (7, 7), 1),   # SDA on a multiple of the group
    (1, 2, 16, 12, (4, 3), 2),   # LDA 'main' groups over an exact multiple of the block
    (2, 2, 9, 9, (3, 3), 3),     # one block over the whole map (v1's strided LDA)
    (1, 4, 12, 18, (2, 3), 3),   # odd group, several blocks
])
def test_natten_dilated_blocks_equal_the_groups(B, heads, H, W, group, interval, dtype):
    """NATTEN's na2d(kernel_size = stride = G, dilation = I) is grouped attention (without a bias)
    on a map that is a multiple of the block I * G, against the dense same-group reference."""
    q, k, v = (t.to(dtype) for t in _qkv(B, heads, H, W, 16, seed=H + W))
    with torch.no_grad():
        out = grouped_attention(q, k, v, group, interval=interval, backend='natten')
    expected = grouped_attention_reference(q.float(), k.float(), v.float(), group, interval=interval)
    assert out.dtype == dtype
    tol = {'atol': 1e-5, 'rtol': 1e-4} if dtype == torch.float32 else {'atol': 3e-2, 'rtol': 3e-2}
    torch.testing.assert_close(out.float(), expected, **tol)


@pytest.mark.skipif(not HAS_NATTEN, reason="NATTEN is not installed (pip install 'zoo[natten]')")
def test_natten_refuses_the_calls_crossformer_makes():
    """CrossFormer's groups carry the dynamic position bias, and on other map sizes a padding
    mask: NATTEN has no bias, so it refuses both, saying why."""
    q, k, v = _qkv(1, 2, 8, 8, 16)
    with torch.no_grad():
        with pytest.raises(za.BackendNotSupported, match="the 'natten' backend cannot apply an attention bias"):
            grouped_attention(q, k, v, 2, interval=2, attn_bias=torch.randn(2, 4, 4), backend='natten')
        q, k, v = _qkv(1, 2, 10, 8, 16)
        with pytest.raises(za.BackendNotSupported, match=(
                "needs a map that is a multiple of the block 4 x 4 \\(got 10 x 8\\): a partial block needs a "
                'padding mask')):
            grouped_attention(q, k, v, 2, interval=2, backend='natten')


@pytest.mark.parametrize('with_bias', [False, True], ids=['no-bias', 'bias'])
@pytest.mark.parametrize('H, W, group, interval', CASES + [(8, 8, (4, 4), 2)])
def test_xformers_path_matches_reference(H, W, group, interval, with_bias, monkeypatch):
    """The xFormers path through a stand-in ``xformers`` (xFormers' documented semantics: see
    zoo_testutils), CPU tensors let through its CUDA check."""
    from zoo.attention import _backends
    from zoo_testutils import install_fake_xformers
    calls = install_fake_xformers(monkeypatch)
    monkeypatch.setattr(_backends, '_cuda_problem', lambda backend, device: None)
    q, k, v = _qkv(2, 3, H, W, 8)
    n = group[0] * group[1]
    bias = torch.randn(3, n, n, generator=torch.Generator().manual_seed(1)) if with_bias else None
    got = grouped_attention(q, k, v, group, interval=interval, attn_bias=bias, backend='xformers')
    expected = grouped_attention_reference(q, k, v, group, interval=interval, attn_bias=bias)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert len(calls) == 1
    padded = H % (group[0] * interval) or W % (group[1] * interval)
    if not with_bias and not padded and (H, W) != (group[0] * interval, group[1] * interval):
        assert type(calls[0]['attn_bias']).__name__ == 'FakeBlockDiagonalMask'

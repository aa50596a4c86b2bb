"""zoo.attention.halo_attention: both backends against a pixel-by-pixel loop, timm's HaloAttn, ONNX."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn as nn
from timm.layers.halo_attn import HaloAttn

from zoo.attention import BackendNotSupported, halo_attention, use_backend

halo_module = importlib.import_module('zoo.attention.halo')


def _loop(q, k, v, block, halo, stride=1, rel_h=None, rel_w=None, scale=None, rel_scaled=False):
    """Halo attention written pixel by pixel from its definition: query (y, x) of the strided
    grid is in block (y // bq, x // bq) at (y % bq, x % bq); its window is that block's
    block x block key square grown by the halo, zero keys/values outside the H x W map."""
    B, heads, Hq, Wq, d = q.shape
    H, W = k.shape[2:4]
    bq, win = block // stride, block + 2 * halo
    scale = d ** -0.5 if scale is None else scale
    out = torch.zeros(B, heads, Hq, Wq, v.shape[-1], dtype=q.dtype)
    for y in range(Hq):
        for x in range(Wq):
            top, left = (y // bq) * block - halo, (x // bq) * block - halo
            logits, values = [], []
            for ky in range(win):
                for kx in range(win):
                    r, c = top + ky, left + kx
                    inside = 0 <= r < H and 0 <= c < W
                    key = k[:, :, r, c] if inside else torch.zeros_like(k[:, :, 0, 0])
                    values.append(v[:, :, r, c] if inside else torch.zeros_like(v[:, :, 0, 0]))
                    logit = (q[:, :, y, x] * key).sum(-1) * scale
                    if rel_h is not None:
                        rel = q[:, :, y, x] @ (rel_h[ky - y % bq + win - 1] + rel_w[kx - x % bq + win - 1])
                        logit = logit + rel * (scale if rel_scaled else 1.0)
                    logits.append(logit)
            weights = torch.stack(logits, -1).softmax(-1)
            out[:, :, y, x] = (weights[..., None] * torch.stack(values, -2)).sum(-2)
    return out


def _inputs(hw, stride=1, block=4, halo=1, d=5, dv=3, heads=2, seed=0, rel=True):
    g = torch.Generator().manual_seed(seed)
    H, W = hw
    hq, wq = -(-H // stride), -(-W // stride)
    q = torch.randn(2, heads, hq, wq, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, heads, H, W, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, heads, H, W, dv, generator=g, dtype=torch.float64)
    win = block + 2 * halo
    rels = [torch.randn(2 * win - 1, d, generator=g, dtype=torch.float64) for _ in range(2)] if rel else [None, None]
    return q, k, v, rels


CASES = [  # (H, W), stride, block, halo
    ((8, 12), 1, 4, 1), ((9, 7), 1, 4, 1), ((3, 5), 1, 4, 2), ((8, 8), 2, 4, 1), ((9, 7), 2, 4, 1),
    ((6, 10), 1, 4, 0), ((7, 5), 1, 2, 1), ((5, 6), 2, 2, 1), ((11, 4), 1, 6, 3),
]


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
@pytest.mark.parametrize('hw,stride,block,halo', CASES)
def test_backends_equal_the_loop(backend, hw, stride, block, halo):
    q, k, v, (rel_h, rel_w) = _inputs(hw, stride, block, halo)
    expected = _loop(q, k, v, block, halo, stride, rel_h, rel_w)
    out = halo_attention(q, k, v, block, halo, query_stride=stride, rel_h=rel_h, rel_w=rel_w, backend=backend)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
def test_scaled_relative_logits_and_no_relative_logits(backend):
    q, k, v, (rel_h, rel_w) = _inputs((9, 7), 1, 4, 2, seed=3)
    out = halo_attention(q, k, v, 4, 2, rel_h=rel_h, rel_w=rel_w, rel_scaled=True, scale=0.3, backend=backend)
    torch.testing.assert_close(out, _loop(q, k, v, 4, 2, 1, rel_h, rel_w, 0.3, True), rtol=1e-10, atol=1e-10)
    out = halo_attention(q, k, v, 4, 2, backend=backend)
    torch.testing.assert_close(out, _loop(q, k, v, 4, 2), rtol=1e-10, atol=1e-10)


def test_sdpa_gradients_equal_the_reference():
    q, k, v, rels = _inputs((9, 10), 2, 4, 1, seed=1)
    leaves = [t.requires_grad_() for t in (q, k, v, *rels)]
    grads = []
    for backend in ('reference', 'sdpa'):
        out = halo_attention(q, k, v, 4, 1, query_stride=2, rel_h=rels[0], rel_w=rels[1], backend=backend)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
        grads.append(torch.autograd.grad(out, leaves, g))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize('kwargs', [dict(), dict(stride=2), dict(scale_pos_embed=True), dict(stride=2, dim_head=8)])
def test_equals_timms_halo_attn_on_divisible_maps(kwargs):
    torch.manual_seed(0)
    m = HaloAttn(16, num_heads=2, block_size=4, halo_size=1, **kwargs).eval()
    nn.init.normal_(m.pos_embed.height_rel)
    nn.init.normal_(m.pos_embed.width_rel)
    x = torch.randn(2, 16, 8, 12)
    heads, dq, dv = m.num_heads, m.dim_head_qk, m.dim_head_v
    with torch.no_grad():
        q = m.q(x).reshape(2, heads, dq, *m.q(x).shape[-2:]).permute(0, 1, 3, 4, 2)
        k, v = m.kv(x).reshape(2, heads, dq + dv, 8, 12).permute(0, 1, 3, 4, 2).split([dq, dv], dim=-1)
        for backend in ('reference', 'sdpa'):
            out = halo_attention(q, k, v, 4, 1, query_stride=m.block_stride, rel_h=m.pos_embed.height_rel,
                                 rel_w=m.pos_embed.width_rel, rel_scaled=m.scale_pos_embed, scale=m.scale,
                                 backend=backend)
            out = out.permute(0, 1, 4, 2, 3).reshape(2, heads * dv, *out.shape[2:4])
            torch.testing.assert_close(out, m(x), rtol=1e-5, atol=1e-5)


def test_backend_selection(monkeypatch):
    q, k, v, _ = _inputs((4, 4))
    calls = []
    for name in ('reference', 'sdpa'):  # spy on the paths the op's Pattern calls
        original = halo_module.PATTERN.paths[name]
        monkeypatch.setitem(halo_module.PATTERN.paths, name,
                            lambda *a, _f=original, _n=f'_{name}': calls.append(_n) or _f(*a))
    halo_attention(q, k, v, 4, 1)
    with use_backend('math'):
        halo_attention(q, k, v, 4, 1)
    monkeypatch.setenv('ZOO_ATTENTION_BACKEND', 'natten,reference')
    halo_attention(q, k, v, 4, 1)
    assert calls == ['_sdpa', '_reference', '_reference']
    with pytest.raises(BackendNotSupported, match='halo_attention'):
        halo_attention(q, k, v, 4, 1, backend='triton')


@pytest.mark.parametrize('change,match', [
    (dict(halo_size=3), 'halo_size'),
    (dict(query_stride=3), 'does not divide'),
    (dict(q_hw=(3, 4)), 'ceil'),
    (dict(rel='h_only'), 'both rel_h and rel_w'),
    (dict(rel='bad_shape'), r'rel_h must be \(2 \* win - 1, head_dim\)'),
])
def test_invalid_arguments(change, match):
    q, k, v, (rel_h, rel_w) = _inputs((8, 8))
    if 'q_hw' in change:
        q = q[:, :, :3, :4]
    if change.get('rel') == 'h_only':
        rel_w = None
    elif change.get('rel') == 'bad_shape':
        rel_h = rel_h[:-1]
    with pytest.raises(ValueError, match=match):
        halo_attention(q, k, v, 4, change.get('halo_size', 1), query_stride=change.get('query_stride', 1),
                       rel_h=rel_h, rel_w=rel_w)


def test_cached_index_works_under_inference_mode_then_autograd():
    halo_module._INDEX_CACHE.clear()
    q, k, v, (rel_h, rel_w) = _inputs((8, 8), d=4, seed=5)
    with torch.inference_mode():
        halo_attention(q.float(), k.float(), v.float(), 4, 1, rel_h=rel_h.float(), rel_w=rel_w.float())
    rel_h = rel_h.requires_grad_()
    halo_attention(q, k, v, 4, 1, rel_h=rel_h, rel_w=rel_w).sum().backward()
    assert rel_h.grad is not None and torch.isfinite(rel_h.grad).all()


class _HaloLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Conv2d(3, 3 * 8, 1)
        self.rel = nn.Parameter(torch.randn(2, 2 * 8 - 1, 4))

    def forward(self, x):
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).reshape(B, 3, 2, 4, H, W).permute(1, 0, 2, 4, 5, 3)
        out = halo_attention(q, k, v, 4, 2, rel_h=self.rel[0], rel_w=self.rel[1])
        return out.permute(0, 1, 4, 2, 3).reshape(B, 8, H, W)


def test_onnx_export_keeps_height_and_width_dynamic(tmp_path):
    pytest.importorskip('onnxruntime')
    from zoo.export import check_onnx, export_onnx
    torch.manual_seed(0)
    layer = _HaloLayer().eval()
    info = export_onnx(layer, tmp_path / 'halo.onnx', input_size=(1, 3, 8, 8))
    assert info.dynamic_axes == ['batch', 'height', 'width'], info.notes
    for shape in ((2, 3, 13, 6), (1, 3, 3, 17)):  # not multiples of the block, smaller than a window
        assert max(check_onnx(layer, tmp_path / 'halo.onnx', torch.randn(shape)).values()) < 1e-5

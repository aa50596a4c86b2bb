"""zoo.layers.rope against a complex-number reference and hand-computed tables."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.layers import apply_rope, rope_1d, rope_2d, rope_2d_frequencies, rope_frequencies


def complex_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Reference: pairs (2j, 2j+1) as complex numbers times exp(i * angle_j)."""
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    rotated = xc * torch.polar(torch.ones_like(angles.double()), angles.double())
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


def test_apply_rope_equals_complex_multiplication() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    angles = torch.rand(7, 4, dtype=torch.float64) * 10
    out = apply_rope(x, angles.sin(), angles.cos())
    torch.testing.assert_close(out, complex_rope(x, angles))
    # per-channel tables with equal pair entries are the same rotation
    out_full = apply_rope(x, angles.repeat_interleave(2, -1).sin(), angles.repeat_interleave(2, -1).cos())
    torch.testing.assert_close(out_full, out)
    # a rotation keeps the norm of every pair
    torch.testing.assert_close(out.reshape(2, 3, 7, 4, 2).norm(dim=-1), x.reshape(2, 3, 7, 4, 2).norm(dim=-1))


@pytest.mark.parametrize('layout', ['contiguous', 'qkv_view', 'odd_offset'])
def test_eager_complex_path_equals_exported_real_path(layout, monkeypatch) -> None:
    # Eager float32 takes the complex product, graph capture the real formula: the same values
    # and gradients, on the strided q/k views the models pass.
    import zoo.layers.rope as rope
    torch.manual_seed(0)
    base = torch.randn(2, 5, 3, 4, 8)  # (B, N, qkv, heads, head_dim), as a fused projection
    if layout == 'contiguous':
        make = lambda t: t[:, :, 1].transpose(1, 2).contiguous()  # noqa: E731
    elif layout == 'qkv_view':
        make = lambda t: t.permute(2, 0, 3, 1, 4)[1]  # noqa: E731  k: even strides, no copy
    else:
        make = lambda t: t.flatten()[1:1 + 2 * 4 * 5 * 8].view(2, 4, 5, 8)  # noqa: E731  odd offset
    sin, cos = rope_1d(5, 8)
    outs, grads = [], []
    for capturing in (False, True):
        monkeypatch.setattr(rope, 'is_capturing', lambda c=capturing: c)
        leaf = base.clone().requires_grad_()
        out = apply_rope(make(leaf), sin, cos)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        outs.append(out)
        grads.append(leaf.grad)
    angles = torch.arange(5.)[:, None] * rope_frequencies(8)[None]
    torch.testing.assert_close(outs[0], complex_rope(make(base), angles))
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_half_precision_uses_the_real_formula() -> None:
    x = torch.randn(2, 3, 7, 8)
    angles = torch.rand(7, 4) * 10
    for dtype in (torch.bfloat16, torch.float16):
        out = apply_rope(x.to(dtype), angles.sin(), angles.cos())
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), complex_rope(x, angles), atol=3e-2, rtol=1e-2)


def test_apply_rope_per_channel_matches_rotate_every_two_formula() -> None:
    # x * cos + rotate_every_two(x) * sin with rotate_every_two(x) = (-x1, x0, -x3, x2, ...)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    sin = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    cos = torch.tensor([[0.5, 0.6, 0.7, 0.8]])
    expected = torch.tensor([[1 * 0.5 - 2 * 0.1, 2 * 0.6 + 1 * 0.2, 3 * 0.7 - 4 * 0.3, 4 * 0.8 + 3 * 0.4]])
    torch.testing.assert_close(apply_rope(x, sin, cos), expected)


def test_apply_rope_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match='even'):
        apply_rope(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match='entries'):
        apply_rope(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='differ'):
        apply_rope(torch.zeros(2, 4), torch.zeros(2, 2), torch.zeros(2, 4))


def test_rope_1d_is_llama_rope() -> None:
    torch.manual_seed(0)
    dim, n, theta = 8, 6, 500.0
    freqs = rope_frequencies(dim, theta)
    torch.testing.assert_close(freqs, torch.tensor([theta ** (-2 * j / dim) for j in range(dim // 2)]))
    sin, cos = rope_1d(n, dim, theta, offset=3)
    angles = torch.arange(3, 3 + n, dtype=torch.float64)[:, None] * freqs.double()[None]
    x = torch.randn(2, n, dim)
    torch.testing.assert_close(apply_rope(x, sin, cos), complex_rope(x, angles), atol=1e-5, rtol=1e-5)
    # relative property: <R(m) q, R(n) k> depends on m - n only
    q, k = torch.randn(dim, dtype=torch.float64), torch.randn(dim, dtype=torch.float64)
    s, c = rope_1d(10, dim, theta)
    s, c = s.double(), c.double()
    dot = [apply_rope(q[None], s[m:m + 1], c[m:m + 1]) @ apply_rope(k[None], s[m - 2:m - 1], c[m - 2:m - 1]).T
           for m in (2, 5, 9)]
    torch.testing.assert_close(dot[0], dot[1])
    torch.testing.assert_close(dot[0], dot[2])


def test_rope_2d_tables_by_hand() -> None:
    angle = rope_2d_frequencies(16)
    assert angle.shape == (8,)
    base = [1.0 / 10000 ** (i / 3) for i in range(4)]
    torch.testing.assert_close(angle, torch.tensor([b for b in base for _ in range(2)]))
    h, w = 3, 5
    sin, cos = rope_2d(angle, h, w)
    assert sin.shape == cos.shape == (h * w, 16)
    for y in range(h):
        for x in range(w):
            t = y * w + x
            for c in range(8):
                assert math.isclose(sin[t, c].item(), math.sin(y * angle[c].item()), abs_tol=1e-6)
                assert math.isclose(cos[t, 8 + c].item(), math.cos(x * angle[c].item()), abs_tol=1e-6)
    with pytest.raises(ValueError, match='multiple of 4'):
        rope_2d_frequencies(6)


def test_rope_2d_rotation_is_complex_rope_of_row_and_column() -> None:
    torch.manual_seed(0)
    angle = rope_2d_frequencies(8)
    h, w = 4, 3
    sin, cos = rope_2d(angle, h, w)
    x = torch.randn(1, 2, h * w, 8, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    pair_freq = angle[0::2].double()
    angles = torch.cat((ys.reshape(-1, 1) * pair_freq, xs.reshape(-1, 1) * pair_freq), dim=-1)
    torch.testing.assert_close(apply_rope(x, sin.double(), cos.double()), complex_rope(x, angles))


def test_apply_rope_onnx_export_keeps_the_sequence_length_dynamic(tmp_path) -> None:
    # Regression: repeat_interleave of the per-pair tables baked the traced length into the
    # exported graph, so a dynamic-length export failed at every other length.
    import numpy as np
    import onnxruntime as ort

    class Rotate(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sin, cos = rope_1d(x.shape[2], x.shape[-1])
            return apply_rope(x, sin, cos)

    path = tmp_path / 'rope.onnx'
    torch.onnx.export(Rotate(), (torch.randn(1, 2, 10, 16),), str(path), dynamo=False, opset_version=18,
                      input_names=['x'], dynamic_axes={'x': {0: 'batch', 2: 'length'}})
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for length in (10, 17):
        x = torch.randn(2, 2, length, 16)
        angles = torch.arange(length, dtype=torch.float32)[:, None] * rope_frequencies(16)[None, :]
        expected = complex_rope(x, angles)
        np.testing.assert_allclose(session.run(None, {'x': x.numpy()})[0], expected.numpy(), atol=1e-5)

"""zoo.layers.deform_conv: the grid_sample decomposition of DCNv1 equals torchvision's op."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.layers import DeformConv2dPack, deform_conv2d, deform_conv2d_decomposed

torchvision = pytest.importorskip('torchvision')

# (in, out, kernel, stride, padding, dilation, offset groups, groups, H, W, offset scale)
CASES = [
    (4, 8, 2, 2, 0, 1, 1, 1, 8, 8, 1.0),  # LITv2's merging layer
    (6, 4, 3, 1, 1, 1, 2, 2, 7, 9, 3.0),  # grouped weights, two offset groups
    (4, 6, 3, 2, 2, 2, 4, 1, 11, 6, 5.0),  # dilation, padding, offsets far outside the image
    (3, 5, 1, 1, 0, 1, 1, 1, 5, 5, 20.0),  # 1x1 kernel, most samples outside
    (8, 8, 2, 2, 0, 1, 1, 1, 2, 3, 0.7),  # one output row
]


def _inputs(case, seed=0):
    c, o, k, s, p, d, g, groups, h, w, scale = case
    gen = torch.Generator().manual_seed(seed)
    h_out = (h + 2 * p - d * (k - 1) - 1) // s + 1
    w_out = (w + 2 * p - d * (k - 1) - 1) // s + 1
    x = torch.randn(2, c, h, w, generator=gen)
    offset = torch.randn(2, 2 * g * k * k, h_out, w_out, generator=gen) * scale
    weight = torch.randn(o, c // groups, k, k, generator=gen)
    bias = torch.randn(o, generator=gen)
    return x, offset, weight, bias, dict(stride=s, padding=p, dilation=d)


@pytest.mark.parametrize('case', CASES)
def test_decomposition_matches_torchvision(case):
    x, offset, weight, bias, kw = _inputs(case)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, **kw)
    out = deform_conv2d_decomposed(x, offset, weight, bias, **kw)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('case', CASES[:3])
def test_decomposition_gradients_match_torchvision(case):
    tensors = _inputs(case, seed=1)
    kw = tensors[-1]
    grads = []
    for fn in (torchvision.ops.deform_conv2d, deform_conv2d_decomposed):
        leaves = [t.clone().requires_grad_() for t in tensors[:4]]
        fn(*leaves, **kw).square().sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


def test_hand_computed_offsets():
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(1, 2, 5, 6)
    weight = torch.randn(3, 2, 2, 2)
    zero = torch.zeros(1, 8, 2, 3)
    # no offset: a plain convolution
    torch.testing.assert_close(deform_conv2d_decomposed(x, zero, weight, stride=2), F.conv2d(x, weight, stride=2))
    # every tap one pixel down: the conv of the image shifted up, zeros entering at the bottom
    down = zero.clone()
    down[:, 0::2] = 1.0
    shifted = F.pad(x[:, :, 1:], (0, 0, 0, 1))
    torch.testing.assert_close(deform_conv2d_decomposed(x, down, weight, stride=2), F.conv2d(shifted, weight, stride=2))
    # half a pixel right: the mean of horizontal neighbours (the last column's right neighbour is 0)
    right = zero.clone()
    right[:, 1::2] = 0.5
    mean = (x + F.pad(x[..., 1:], (0, 1))) / 2
    torch.testing.assert_close(deform_conv2d_decomposed(x, right, weight, stride=2), F.conv2d(mean, weight, stride=2))


def test_dispatch_and_errors(monkeypatch):
    x, offset, weight, bias, kw = _inputs(CASES[0])
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, **kw)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, impl='torchvision', **kw), ref)
    # On CPU the default is the decomposition: it must not call torchvision's kernel.
    monkeypatch.setattr(torchvision.ops, 'deform_conv2d', lambda *a, **k: pytest.fail('torchvision called'))
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, **kw), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='impl must be one of'):
        deform_conv2d(x, offset, weight, bias, impl='cuda', **kw)
    with pytest.raises(ValueError, match='offset has 6 channels'):
        deform_conv2d_decomposed(x, offset[:, :6], weight, bias, **kw)


def test_pack_module_starts_as_a_plain_conv_and_exports_to_onnx(tmp_path):
    from zoo.export import check_onnx, export_onnx
    torch.manual_seed(0)
    m = DeformConv2dPack(4, 8, 2, stride=2).eval()
    assert sorted(k for k, _ in m.named_parameters()) == ['bias', 'conv_offset.bias', 'conv_offset.weight', 'weight']
    x = torch.randn(1, 4, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, stride=2))
        m.conv_offset.weight.normal_(0, 0.3)  # real deformation for the export check
        m.conv_offset.bias.normal_(0, 0.5)
    info = export_onnx(m, tmp_path / 'dcn.onnx', input_size=(1, 4, 16, 20))
    assert info.dynamic_axes == ['batch', 'height', 'width'], info.notes
    for shape in [(1, 4, 16, 20), (2, 4, 10, 14)]:
        errors = check_onnx(m, info.path, torch.randn(shape))
        assert max(errors.values()) <= 1e-4, errors


@pytest.mark.parametrize('impl', ['decomposed', 'torchvision'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_samples_in_float32(impl, dtype):
    # Sampling positions near 60 px: in bfloat16 they would be rounded to a quarter pixel. Under
    # autocast, and for low-precision inputs, the op computes in float32 (like the official CUDA
    # op under apex and torchvision's autocast kernel) and returns the input's dtype.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=gen)
    offset = torch.rand(2, 8, 32, 32, generator=gen) * 0.9  # fractional shifts
    weight = torch.randn(6, 4, 2, 2, generator=gen)
    bias = torch.randn(6, generator=gen)
    with torch.autocast('cpu', dtype=dtype):
        # the offset conv's output arrives in low precision; the float32 input map stays float32
        out = deform_conv2d(x, offset.to(dtype), weight, bias, stride=2, impl=impl)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torchvision.ops.deform_conv2d(x, offset.to(dtype).float(), weight, bias, stride=2),
                               atol=1e-4, rtol=1e-4)
    # a low-precision input: the result is the float32 op's, rounded once
    out = deform_conv2d(x.to(dtype), offset.to(dtype), weight.to(dtype), bias.to(dtype), stride=2, impl=impl)
    assert out.dtype == dtype
    ref = torchvision.ops.deform_conv2d(x.to(dtype).float(), offset.to(dtype).float(), weight.to(dtype).float(),
                                        bias.to(dtype).float(), stride=2)
    torch.testing.assert_close(out, ref.to(dtype))  # within one rounding of the float32 result

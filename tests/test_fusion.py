"""Folding BatchNorms and layer scales into convolutions (zoo.layers.fusion) and the families'
``reparameterize()`` through timm's ``reparameterize_model``: same outputs as unfused."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from timm.utils import reparameterize_model

import zoo  # noqa: F401
from zoo.layers import batchnorm_affine, fold_affine_into_conv_input, fold_batchnorm_after_conv, scale_conv_output


def _random_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


def test_batchnorm_affine_by_hand() -> None:
    bn = _random_bn(4)
    scale, shift = batchnorm_affine(bn)
    x = torch.randn(2, 4, 3, 3)
    by_hand = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(x * scale[:, None, None] + shift[:, None, None], by_hand)
    torch.testing.assert_close(bn(x), by_hand)


@pytest.mark.parametrize('groups', [1, 2, 6])
def test_fold_affine_into_conv_input(groups: int) -> None:
    torch.manual_seed(0)
    bn = _random_bn(6)
    conv = nn.Conv2d(6, 12, 3, padding=0, groups=groups)
    x = torch.randn(2, 6, 9, 7)
    with torch.no_grad():
        expected = conv(bn(x))
        fold_affine_into_conv_input(conv, *batchnorm_affine(bn))
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_fold_into_padded_conv_input_is_refused() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match='padded convolution'):
        fold_affine_into_conv_input(conv, torch.ones(4), torch.zeros(4))


def test_scale_output_and_fold_bn_after_conv_without_bias() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=False), _random_bn(5)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = bn(conv(x))
        fold_batchnorm_after_conv(conv, bn)
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
        gamma, beta = torch.rand(5), torch.randn(5)
        expected = conv(x) * gamma[:, None, None] + beta[:, None, None]
        scale_conv_output(conv, gamma, beta)
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name,size', [('van_b0', 224), ('van_b2', 96)])
def test_van_reparameterized_equals_unfused(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    with torch.no_grad():  # statistics and layer scales away from their initial values
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.load_state_dict(_random_bn(module.num_features).state_dict())
        for key, param in model.named_parameters():
            if key.endswith('gamma'):
                param.uniform_(0.01, 0.2)
    fused = reparameterize_model(model)
    blocks = [m for m in fused.modules() if type(m).__name__ == 'VanBlock']
    assert blocks and all(b.fused and isinstance(b.norm1, nn.Identity) for b in blocks)
    x = torch.randn(2, 3, size, size + 32)
    with torch.no_grad():
        expected, out = model(x), fused(x)
    assert ((out - expected).abs().max() / expected.abs().max()) < 1e-4
    with torch.no_grad():  # and the stage features the dense backbones use
        for a, b in zip(model.forward_intermediates(x, intermediates_only=True),
                        fused.forward_intermediates(x, intermediates_only=True)):
            assert ((a - b).abs().max() / a.abs().max()) < 1e-4


def test_conv_batchnorm_folding_in_halonet() -> None:
    # timm's ByobNet blocks (ConvNormAct: conv, then BatchNormAct2d with its activation)
    from zoo.layers import fuse_conv_batchnorm, fuse_for_inference
    torch.manual_seed(0)
    model = timm.create_model('halonet26t').eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.load_state_dict(_random_bn(module.num_features).state_dict())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_for_inference(model)
        # all but the norms after the halo attention (no conv before them; an activation after)
        left = [name for name, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert left and all(name.endswith('post_attn') for name in left), left
        out = fused(x)
    assert ((out - expected).abs().max() / expected.abs().max()) < 1e-4
    assert fuse_conv_batchnorm(fused) == 0  # nothing left to fold


def test_calibrate_batchnorm_statistics_takes_the_batch_statistics() -> None:
    from zoo.layers import calibrate_batchnorm_statistics
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5)).eval()
    images = torch.randn(3, 3, 9, 9) * 5 + 2
    calibrate_batchnorm_statistics(model, images)
    assert not model.training and model[1].momentum == 0.1  # mode and momentum restored
    with torch.no_grad():
        h = model[0](images)
        torch.testing.assert_close(model[1].running_mean, h.mean((0, 2, 3)))
        torch.testing.assert_close(model[1].running_var, h.var((0, 2, 3), unbiased=True))
        out = model(images)  # eval mode now normalises this batch (up to the unbiased variance)
    torch.testing.assert_close(out.mean((0, 2, 3)), model[4].bias.detach(), atol=1e-2, rtol=0)

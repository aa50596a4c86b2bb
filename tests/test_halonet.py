"""HaloNet: timm's halo models at any input size (padding inside the halo attention).

Runs once ``backbones.halonet`` is registered (its import line in ``backbones/__init__.py``).
"""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers.halo_attn import HaloAttn

from zoo.registry import list_models

if 'halonet26t' not in list_models():
    pytest.skip('backbones.halonet is not registered', allow_module_level=True)

from backbones.halonet import PaddedHaloAttn  # noqa: E402


def _reference_halo_attn(m: HaloAttn, x: torch.Tensor) -> torch.Tensor:
    """Halo attention (stride 1) pixel by pixel: each query's window is its block grown by the
    halo, positions outside the image have zero keys and values, relative logits by offset."""
    b, halo, win = m.block_size, m.halo_size, m.win_size
    B, _, H, W = x.shape
    nh, dq, dv = m.num_heads, m.dim_head_qk, m.dim_head_v
    q = m.q(x).reshape(B, nh, dq, H, W)
    pad = (halo, halo + (-W) % b, halo, halo + (-H) % b)
    kv = F.pad(m.kv(x), pad)  # channels: per head, its key then its value
    k, v = kv.reshape(B, nh, dq + dv, *kv.shape[-2:]).split([dq, dv], dim=2)
    rel_h, rel_w = m.pos_embed.height_rel, m.pos_embed.width_rel
    out = torch.zeros(B, nh, dv, H, W)
    offs = torch.arange(win)
    for y in range(H):
        for xx in range(W):
            oy, ox = (y // b) * b, (xx // b) * b  # window origin in the padded map
            kw = k[..., oy:oy + win, ox:ox + win].reshape(B, nh, dq, -1)
            vw = v[..., oy:oy + win, ox:ox + win].reshape(B, nh, dv, -1)
            qv = q[..., y, xx]  # B, nh, dq
            logits = torch.einsum('bhd,bhdn->bhn', qv, kw) * m.scale
            pos_h = qv @ rel_h[offs - y % b + win - 1].T  # B, nh, win
            pos_w = qv @ rel_w[offs - xx % b + win - 1].T
            logits = logits + (pos_h[..., :, None] + pos_w[..., None, :]).reshape(B, nh, -1)
            out[..., y, xx] = torch.einsum('bhn,bhdn->bhd', logits.softmax(-1), vw)
    return out.reshape(B, nh * dv, H, W)


@pytest.fixture(scope='module')
def attn() -> HaloAttn:
    torch.manual_seed(0)
    m = HaloAttn(16, num_heads=2, block_size=4, halo_size=1).eval()
    torch.nn.init.normal_(m.pos_embed.height_rel)
    torch.nn.init.normal_(m.pos_embed.width_rel)
    return m


def test_reference_equals_timm_on_divisible_maps(attn):
    x = torch.randn(2, 16, 8, 12)
    with torch.no_grad():
        assert torch.allclose(attn(x), _reference_halo_attn(attn, x), atol=1e-5)


@pytest.mark.parametrize('hw', [(9, 7), (5, 13), (3, 3)])
def test_padded_attention_equals_the_reference_at_any_size(attn, hw):
    padded = PaddedHaloAttn(16, num_heads=2, block_size=4, halo_size=1).eval()
    padded.load_state_dict(attn.state_dict())
    x = torch.randn(2, 16, *hw)
    with torch.no_grad():
        out = padded(x)
        assert out.shape == (2, 16, *hw)
        assert torch.allclose(out, _reference_halo_attn(attn, x), atol=1e-5)


def test_strided_attention_crops_to_ceil():
    torch.manual_seed(0)
    m = PaddedHaloAttn(16, num_heads=2, block_size=4, halo_size=1, stride=2).eval()
    x = torch.randn(1, 16, 9, 7)
    with torch.no_grad():
        out = m(x)
        full = HaloAttn.forward(m, F.pad(x, (0, 1, 0, 3)))  # timm's attention on the zero-padded 12x8 map
    assert out.shape == (1, 16, 5, 4) and torch.equal(out, full[..., :5, :4])


@pytest.mark.parametrize('name', ['eca_halonext26ts'])
def test_equals_timm_at_256(name):
    from timm.models.byoanet import model_cfgs
    from timm.models.byobnet import ByobNet
    torch.manual_seed(0)
    ref = ByobNet(model_cfgs[name]).eval()
    ours = timm.create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
        with pytest.raises(Exception):
            ref(torch.randn(1, 3, 224, 224))  # timm's own model needs multiples of 256
        assert ours(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_four_stage_features():
    model = timm.create_model('eca_halonext26ts', features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 33), (13, 17), (7, 9), (4, 5)]

"""HaloNet: timm's halo models at any input size (zoo.attention.halo_attention), timm's weights.

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

from backbones.halonet import HaloAttention  # noqa: E402
from zoo.attention import use_backend  # noqa: E402


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


@pytest.mark.parametrize('backend', ['sdpa', 'reference'])
@pytest.mark.parametrize('hw', [(9, 7), (5, 13), (3, 3)])
def test_attention_equals_the_pixel_reference_at_any_size(attn, hw, backend):
    ours = HaloAttention(16, num_heads=2, block_size=4, halo_size=1).eval()
    ours.load_state_dict(attn.state_dict())
    x = torch.randn(2, 16, *hw)
    with torch.no_grad(), use_backend(backend):
        out = ours(x)
    assert out.shape == (2, 16, *hw)
    assert torch.allclose(out, _reference_halo_attn(attn, x), atol=1e-5)


def test_strided_attention_is_timms_on_the_zero_padded_map():
    torch.manual_seed(0)
    m = HaloAttention(16, num_heads=2, block_size=4, halo_size=1, stride=2).eval()
    x = torch.randn(1, 16, 9, 7)
    with torch.no_grad():
        out = m(x)
        full = HaloAttn.forward(m, F.pad(x, (0, 1, 0, 3)))  # timm's attention on the zero-padded 12x8 map
    assert out.shape == (1, 16, 5, 4)
    torch.testing.assert_close(out, full[..., :5, :4], rtol=1e-5, atol=1e-6)


def _timm_model(name: str) -> torch.nn.Module:
    """timm's own model for ``name`` with random weights and BatchNorm affine/statistics (at
    timm's init the last BN of every block is zero, which would hide the attention)."""
    from timm.models.byoanet import model_cfgs
    from timm.models.byobnet import ByobNet
    torch.manual_seed(0)
    ref = ByobNet(model_cfgs[name]).eval()
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return ref


@pytest.mark.parametrize('name', ['halonet26t', pytest.param('sehalonet33ts', marks=pytest.mark.slow),
                                  pytest.param('halonet50ts', marks=pytest.mark.slow), 'eca_halonext26ts'])
def test_equals_timm_at_256(name):
    ref = _timm_model(name)
    ours = timm.create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert sum(isinstance(m, HaloAttention) for m in ours.modules()) >= 3
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = ref(x)
        assert expected.std() > 0.01  # not a constant output
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(Exception):
            ref(torch.randn(1, 3, 224, 224))  # timm's own model needs multiples of 256
        assert ours(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_four_stage_features():
    model = timm.create_model('eca_halonext26ts', features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 33), (13, 17), (7, 9), (4, 5)]


def test_pretrained_cfgs_are_timms():
    # The weights are timm's trainings: timm's cfgs, every field (hub repos, release files,
    # evaluation settings), and no tags of the zoo's own.
    import dataclasses
    from timm.models import byoanet, get_pretrained_cfg
    from zoo.registry import pretrained_tags
    for name in ('halonet26t', 'sehalonet33ts', 'halonet50ts', 'eca_halonext26ts'):
        tags = pretrained_tags(name)
        assert tags == list(byoanet.default_cfgs[name].tags)
        for tag in tags:
            ours, theirs = get_pretrained_cfg(f'{name}.{tag}'), byoanet.default_cfgs[name].cfgs[tag]
            assert ours.hf_hub_id == f'timm/{name}.{tag}' and theirs.hf_hub_id == 'timm/'
            completed = dataclasses.replace(theirs, hf_hub_id=ours.hf_hub_id, architecture=name, tag=tag)
            assert ours == completed


def test_onnx_export_runs_at_other_sizes(tmp_path):
    pytest.importorskip('onnxruntime')
    from zoo.export import check_onnx, export_onnx
    model = timm.create_model('halonet26t', pretrained=False).eval()
    model.load_state_dict(_timm_model('halonet26t').state_dict())
    info = export_onnx(model, tmp_path / 'halonet26t.onnx', input_size=(1, 3, 256, 256))
    assert info.dynamic_axes == ['batch', 'height', 'width'], info.notes
    for shape in ((1, 3, 224, 224), (2, 3, 97, 131)):  # timm's own model takes neither
        assert max(check_onnx(model, tmp_path / 'halonet26t.onnx', torch.randn(shape)).values()) < 1e-4

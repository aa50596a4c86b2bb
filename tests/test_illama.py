"""iLLaMA specifics: the official numerics, causality, any input size, the soft mask, the neck."""
from __future__ import annotations

import importlib

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

import zoo.attention as za
from zoo.checkpoint import CheckpointError
from zoo.layers import InputError, apply_rope, rope_1d
from zoo_testutils import parity_checkpoint

illama = importlib.import_module('backbones.illama')


pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


def _tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model('illama_tiny', **kwargs).eval()


@pytest.mark.parametrize('name, hidden', [('illama_tiny', 512), ('illama_small', 1024), ('illama_base', 2048),
                                          ('illama_large', 2816)])
def test_swiglu_widths(name, hidden):
    # 256 * ceil(int(2 * 4D / 3) / 256), bias-free (REFERENCE.md / official Mlp)
    with torch.device('meta'):
        model = timm.create_model(name)
    mlp = model.blocks[0].mlp
    assert (mlp.fc1.out_features, mlp.fc3.out_features, mlp.fc2.in_features) == (hidden,) * 3
    assert mlp.fc1.bias is None and mlp.fc2.bias is None and mlp.fc3.bias is None
    assert model.blocks[0].attn.qkv.bias is not None and model.head.bias is not None


def test_rmsnorm_computes_in_float32():
    norm = illama.RMSNorm(64)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(2, 5, 64) * 30).bfloat16()
    xf = x.float()
    expected = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16() * norm.weight.bfloat16()
    assert torch.equal(norm.bfloat16()(x), expected)


def test_rope_equals_the_official_complex_rotation():
    # The official precompute_freqs_cis + apply_rotary_emb (complex), written out.
    n, d = 197, 64
    freqs = 1.0 / (10000.0 ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    cis = torch.polar(torch.ones(n, d // 2), torch.outer(torch.arange(n), freqs).float())
    x = torch.randn(2, 3, n, d)
    expected = torch.view_as_real(torch.view_as_complex(x.reshape(2, 3, n, d // 2, 2)) * cis).flatten(3)
    sin, cos = rope_1d(n, d)
    torch.testing.assert_close(apply_rope(x, sin, cos), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope='module')
def tiny():
    return _tiny()


def test_post_sequence_class_token_and_intermediate_maps(tiny):
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        tokens = tiny.forward_features(x)
        assert tokens.shape == (2, 6 * 8 + 1, 192)
        torch.testing.assert_close(tiny(x), tiny.head(tokens[:, -1]))
        maps = tiny.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(maps[0], tokens[:, :-1].reshape(2, 6, 8, 192).permute(0, 3, 1, 2))
        raw = tiny.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    # NCHW maps are views of each block's tokens (class token included), not copies
    for m in raw:
        assert m.stride() == ((6 * 8 + 1) * 192, 1, 8 * 192, 192)
        assert m.untyped_storage().nbytes() == 2 * (6 * 8 + 1) * 192 * 4
    assert raw[0].untyped_storage().data_ptr() != raw[1].untyped_storage().data_ptr()


def test_mask_semantics_inside_the_model(tiny):
    # The official mask multiplies the softmax (normalised over ALL keys), so a change in the
    # last patch reaches the earlier tokens only through that normaliser: a little. The soft
    # mask (r > 0) lets the earlier tokens attend to it directly: much more.
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[..., 48:, 48:] += 3.0  # the last patch (token 15 of 16)

    def change(rate):
        tiny.set_soft_mask_rate(rate)
        with torch.no_grad():
            a, b = (tiny.forward_intermediates(t, indices=[0], intermediates_only=True)[0] for t in (x, y))
        tiny.set_soft_mask_rate(0.0)
        return (a - b).abs().amax(1).flatten(1)[0]  # per token, over the 4x4 grid

    causal, soft = change(0.0), change(1.0)
    assert causal[15] > 0 and soft[15] > 0
    assert soft[:15].max() > 10 * causal[:15].max()
    with za.use_backend('reference'), torch.no_grad():  # the same on the materialised path
        a, b = (tiny.forward_intermediates(t, indices=[0], intermediates_only=True)[0] for t in (x, y))
    torch.testing.assert_close((a - b).abs().amax(1).flatten(1)[0], causal, rtol=1e-3, atol=1e-6)


def test_soft_mask_training_matches_reference_backend_gradients(monkeypatch):
    monkeypatch.setattr(importlib.import_module('zoo.attention.causal'), '_MATERIALISE_BYTES', 0)
    grads = []
    for backend in ('reference', 'sdpa'):
        model = _tiny(drop_path_rate=0.0).train()
        model.set_soft_mask_rate(0.3)
        with za.use_backend(backend):
            model(torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_soft_mask_schedule_and_rate(tiny):
    assert illama.soft_mask_schedule(1.0, 6, 3) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert illama.soft_mask_schedule(1.0, 5, 3, 'linear') == [1.0, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        illama.soft_mask_schedule(1.0, 5, 6)
    tiny.update_soft_mask(0.25)  # the official scripts' name
    assert tiny.soft_mask_rate == 0.25
    tiny.set_soft_mask_rate(0.0)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        tiny.set_soft_mask_rate(2.0)


def test_position_embedding_resampling_at_load_and_at_run_time(tmp_path):
    path = str(parity_checkpoint('illama_tiny', tmp_path / 'tiny.pth'))
    at224 = timm.create_model('illama_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    at384 = timm.create_model('illama_tiny', pretrained=True, img_size=384, pretrained_cfg_overlay=dict(file=path)).eval()
    assert at384.pos_embed.shape == (1, 24 * 24 + 1, 192)
    # the class row stays last and untouched
    assert torch.equal(at384.pos_embed[:, -1], at224.pos_embed[:, -1])
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        assert torch.equal(at384(x), at224(x))  # resampled once at load == resampled per forward
    # and back: a 384 file loads into a 224 model (the 384 fine-tunes into the default model)
    torch.save({'model': at384.state_dict()}, tmp_path / 'tiny384.pth')
    back = timm.create_model('illama_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'tiny384.pth')))
    assert back.pos_embed.shape == (1, 197, 192)


def test_384_tags_build_384_models():
    for tag in ('illama_base.official_in1k_384', 'illama_large.official_in21k_ft_in1k_384'):
        cfg = get_pretrained_cfg(tag)
        assert cfg.input_size == (3, 384, 384) and cfg.crop_pct == 1.0 and cfg.crop_mode == 'squash'
        with torch.device('meta'):
            model = timm.create_model(tag)
        assert model.pos_embed.shape[1] == 24 * 24 + 1
    cfg = get_pretrained_cfg('illama_tiny.official_in1k')
    assert (cfg.hf_hub_id, cfg.hf_hub_filename) == ('techmonsterwang/iLLaMA', 'illama-tiny-in1k-75.0.pth')
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.crop_pct == 0.875 and 'no LICENSE' in cfg.license


def test_fixed_size_mode_and_checkpoint_of_another_variant(tmp_path):
    model = _tiny(dynamic_img_size=False)
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    with pytest.raises(InputError, match='dynamic_img_size=False'):
        model(torch.randn(1, 3, 240, 224))
    path = str(parity_checkpoint('illama_tiny', tmp_path / 'tiny.pth'))
    with pytest.raises(CheckpointError, match='illama_tiny'):
        timm.create_model('illama_small', pretrained=True, pretrained_cfg_overlay=dict(file=path))


# ---------------------------------------------------------------- the neck

def test_simple_feature_pyramid_shapes_and_registration():
    pytest.importorskip('mmdet')
    import mmdet.registry
    import mmseg.registry
    import necks  # noqa: F401
    import zoo.mm  # noqa: F401
    from necks.simple_fpn import SimpleFeaturePyramid

    x = torch.randn(2, 192, 7, 9, requires_grad=True)  # a 97x131 image at stride 16
    det = mmdet.registry.MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=[192], out_channels=32))
    outs = det((x,))
    assert [o.shape[-2:] for o in outs] == [(28, 36), (14, 18), (7, 9), (4, 5), (2, 3)]
    assert all(o.shape[:2] == (2, 32) for o in outs)
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in det.parameters())
    retina = SimpleFeaturePyramid(192, 32, scale_factors=(2.0, 1.0, 0.5), num_outs=5, add_extra_convs=True)
    assert [o.shape[-1] for o in retina(x)] == [18, 9, 5, 3, 2]
    seg = mmseg.registry.MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=192, out_channels=32, num_outs=4))
    assert len(seg(x)) == 4
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFeaturePyramid(192, 32, num_outs=3)

"""SHViT: official checkpoints load into timm's model, and the EfficientViT-style FPN neck."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg, model_entrypoint

from backbones.shvit import _official_key, checkpoint_filter_fn
from zoo.registry import pretrained_tags
from zoo_testutils import DATA, parity_checkpoint, parity_fixture, parity_input, rel_err, rule_tensor


@pytest.mark.parametrize('official, ours', [
    ('blocks1.1.ffn.m.pw2.bn.weight', 'stages.0.blocks.1.ffn.m.pw2.bn.weight'),
    ('blocks2.0.0.m.c.weight', 'stages.1.downsample.0.m.c.weight'),
    ('blocks2.0.1.m.pw1.c.weight', 'stages.1.downsample.1.m.pw1.c.weight'),
    ('blocks3.1.se.fc1.weight', 'stages.2.downsample.2.se.fc1.weight'),
    ('blocks3.2.0.m.bn.running_var', 'stages.2.downsample.3.m.bn.running_var'),
    ('blocks2.2.1.m.pw2.c.weight', 'stages.1.downsample.4.m.pw2.c.weight'),
    ('blocks2.3.mixer.m.qkv.c.weight', 'stages.1.blocks.0.mixer.m.qkv.c.weight'),
    ('blocks3.7.ffn.m.pw1.bn.bias', 'stages.2.blocks.4.ffn.m.pw1.bn.bias'),
    ('patch_embed.6.bn.weight', 'patch_embed.6.bn.weight'),
    ('head.l.weight', 'head.l.weight'),
])
def test_official_keys_map_to_timm_layout(official, ours):
    assert _official_key(official) == ours


def test_names_are_taken_over_from_timm():
    for name in ('shvit_s1', 'shvit_s2', 'shvit_s3', 'shvit_s4'):
        assert model_entrypoint(name).__module__ == 'backbones.shvit'
        # timm's tag (its hub copy) stays the default with timm's values; ours beside it
        assert pretrained_tags(name) == ['in1k', 'official_in1k']
        assert get_pretrained_cfg(name).hf_hub_id == f'timm/{name}.in1k'
        cfg = get_pretrained_cfg(f'{name}.official_in1k')
        assert cfg.url == f'https://github.com/ysj9909/SHViT/releases/download/v1.0/{name}.pth'
    assert get_pretrained_cfg('shvit_s4.official_in1k').input_size == (3, 256, 256)
    assert get_pretrained_cfg('shvit_s4').input_size == (3, 256, 256)


def test_official_file_with_2d_pointwise_weights_loads(tmp_path):
    # Some exports store 1x1 conv weights as matrices: the filter reshapes them.
    path = parity_checkpoint('shvit_s1', tmp_path / 'official.pth')
    sd = torch.load(path)['model']
    flat = [k for k, v in sd.items() if v.ndim == 4 and v.shape[2:] == (1, 1)]
    assert len(flat) > 50
    sd.update({k: sd[k].flatten(1) for k in flat})
    torch.save({'model': sd}, tmp_path / 'flat.pth')
    model = timm.create_model('shvit_s1', pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'flat.pth')))
    with torch.no_grad():
        y = model.eval()(parity_input('shvit_s1'))
    assert rel_err(y, torch.tensor(parity_fixture('shvit_s1')['expected_logits'])) <= 1e-4


def test_timm_layout_files_still_load(tmp_path):
    # timm's hub weights (converted layout) pass through the filter unchanged.
    torch.manual_seed(0)
    src = timm.create_model('shvit_s1').eval()
    converted = checkpoint_filter_fn(src.state_dict(), src)
    assert converted.keys() == src.state_dict().keys()
    torch.save(src.state_dict(), tmp_path / 'timm_layout.pth')
    model = timm.create_model('shvit_s1', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'timm_layout.pth'))).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))


def test_feature_strides_and_any_size():
    model = timm.create_model('shvit_s1', features_only=True).eval()
    assert model.feature_info.reduction() == [16, 32, 64]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 65, 130))
    assert [tuple(f.shape[-2:]) for f in feats] == [(5, 9), (3, 5), (2, 3)]


# ---------------------------------------------------------------- EfficientViT-style FPN neck

def _neck(**kwargs):
    pytest.importorskip('mmdet')
    from necks.efficientvit_fpn import EfficientViTFPN
    torch.manual_seed(0)
    neck = EfficientViTFPN(in_channels=[224, 336, 448], out_channels=32, num_outs=5, **kwargs)
    neck.init_weights()
    return neck.eval()


def _inputs(h=8, w=12):
    return tuple(torch.randn(1, c, -(-h // s), -(-w // s)) for c, s in [(224, 1), (336, 2), (448, 4)])


def test_neck_without_transposed_levels_is_mmdet_fpn():
    from mmdet.models.necks import FPN
    ours = _neck(add_extra_convs='on_input')
    ref = FPN(in_channels=[224, 336, 448], out_channels=32, num_outs=5, add_extra_convs='on_input').eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = _inputs()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ours(x), ref(x)))


@pytest.mark.parametrize('recipe, kwargs, strides', [
    ('retinanet', dict(num_extra_trans_convs=1, add_extra_convs='on_input'), [8, 16, 32, 64, 128]),
    ('mask-rcnn', dict(num_extra_trans_convs=2), [4, 8, 16, 32, 64]),
])
def test_neck_levels_of_the_official_recipes(recipe, kwargs, strides):
    # SHViT's three stages (strides 16, 32, 64) at a 256x384 input
    neck = _neck(**kwargs)
    with torch.no_grad():
        outs = neck(_inputs(16, 24))
    assert [o.shape[1] for o in outs] == [32] * 5
    assert [tuple(o.shape[-2:]) for o in outs] == [(256 // s, 384 // s) for s in strides]


def test_neck_transposed_levels_follow_the_official_order():
    # Composed by hand: laterals with the top-down sum, the transposed convs chained from the
    # finest lateral, and extra_fpn_convs[0] applied to the finest (last) transposed level.
    import torch.nn.functional as F
    neck = _neck(num_extra_trans_convs=2)
    x = _inputs()
    with torch.no_grad():
        lat = [conv(t) for conv, t in zip(neck.lateral_convs, x)]
        lat[1] = lat[1] + F.interpolate(lat[2], size=lat[1].shape[2:], mode='nearest')
        lat[0] = lat[0] + F.interpolate(lat[1], size=lat[0].shape[2:], mode='nearest')
        t1 = neck.extra_trans_convs[0].conv(lat[0])
        t2 = neck.extra_trans_convs[1].conv(t1)
        expected = [neck.extra_fpn_convs[0](t2), neck.extra_fpn_convs[1](t1)] + [
            conv(t) for conv, t in zip(neck.fpn_convs, lat)]
        outs = neck(x)
    assert len(outs) == 5 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(outs, expected))
    assert isinstance(neck.extra_trans_convs[0].conv, torch.nn.ConvTranspose2d)
    assert neck.extra_trans_convs[0].conv.bias is not None  # no norm: conv bias, as the official module


def test_neck_is_in_the_mm_registries():
    pytest.importorskip('mmdet')
    import necks  # noqa: F401
    from mmdet.registry import MODELS
    neck = MODELS.build(dict(type='EfficientViTFPN', in_channels=[224, 336, 448], out_channels=16, num_outs=5,
                             num_extra_trans_convs=2))
    assert len(neck.extra_trans_convs) == 2
    with pytest.raises(ValueError, match='num_extra_trans_convs'):
        MODELS.build(dict(type='EfficientViTFPN', in_channels=[8], out_channels=8, num_outs=2, num_extra_trans_convs=2))


@pytest.mark.parametrize('recipe', ['retinanet', 'mask-rcnn'])
def test_neck_matches_the_official_neck(recipe):
    # The official EfficientViTFPN (SHViT downstream/efficientvit_fpn.py) with the recipe's
    # arguments and deterministic weights: the same keys (so the neck part of an official
    # detector file loads under the same names) and the same outputs.
    pytest.importorskip('mmdet')
    import json
    from necks.efficientvit_fpn import EfficientViTFPN
    fx = json.loads((DATA / 'neck_parity' / f'shvit_s4_{recipe}_efficientvit_fpn.json').read_text())
    neck = EfficientViTFPN(**fx['official_kwargs']).eval()
    assert [[k, list(v.shape)] for k, v in neck.state_dict().items()] == [e[:2] for e in fx['state_dict']]
    neck.load_state_dict({k: rule_tensor(k, shape) for k, shape, *_ in fx['state_dict']}, strict=True)
    for case in fx['cases']:
        g = torch.Generator().manual_seed(case['input']['seed'])
        x = tuple(torch.randn(*shape, generator=g) for shape in case['input']['shapes'])
        with torch.no_grad():
            outs = neck(x)
        assert len(outs) == len(case['outputs'])
        for i, (out, ref) in enumerate(zip(outs, case['outputs'])):
            assert list(out.shape) == ref['shape']
            assert rel_err(out[0].mean((1, 2)), torch.tensor(ref['channel_means'])) <= 1e-4
            idx = torch.randint(0, out.numel(), (256,), generator=torch.Generator().manual_seed(i))
            assert rel_err(out.flatten()[idx], torch.tensor(ref['samples'])) <= 1e-4

"""The OpenMMLab backbone adapter, tested as mmdet tests its backbones."""
from __future__ import annotations

import importlib

import pytest
import timm
import torch

import zoo.mm  # noqa: E402,F401
from mmengine.registry import MODELS  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from zoo.checkpoint import CheckpointError  # noqa: E402
from zoo.mm import FAMILY_ALIASES, ZooBackbone  # noqa: E402
from zoo.registry import family_of, list_models  # noqa: E402
from zoo_testutils import SMALLEST, parity_checkpoint, parity_fixture_names  # noqa: E402

BACKBONES = sorted(n for n in SMALLEST)


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('hw', [(64, 64), (97, 131), (224, 160)])
def test_output_shapes(name, hw):
    backbone = ZooBackbone(name).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, *hw))
    assert isinstance(outs, tuple) and len(outs) == min(4, len(backbone.model.feature_info))
    for out, c, s in zip(outs, backbone.feature_channels, backbone.feature_strides):
        assert out.shape == (2, c, -(-hw[0] // s), -(-hw[1] // s))
        assert out.is_contiguous()


@pytest.mark.parametrize('name', BACKBONES)
def test_out_indices_and_out_norms(name):
    full = ZooBackbone(name).eval()
    last = len(full.out_indices) - 1  # 3, or 2 for three-stage families (SHViT)
    backbone = ZooBackbone(name, out_indices=(1, last), out_norms=(False, True)).eval()
    full.model.load_state_dict(backbone.model.state_dict(), strict=False)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        outs, ref = backbone(x), full(x)
    assert len(outs) == 2
    assert torch.allclose(outs[0], ref[1], atol=1e-5)
    normed = torch.nn.functional.layer_norm(ref[last].permute(0, 2, 3, 1), ref[last].shape[1:2], eps=1e-6)
    assert torch.allclose(outs[1], normed.permute(0, 3, 1, 2), atol=1e-4)
    # stages after the last output are pruned away
    assert len(ZooBackbone(name, out_indices=(0, 1)).model.stages) == 2
    # the eps of the official recipes' norms (DaViT: nn.LayerNorm's 1e-5)
    scaled = ref[last] * 1e-3  # small activations make the eps visible
    eps5 = ZooBackbone(name, out_indices=(last,), out_norms=True, out_norm_eps=1e-5).out_norms[0]
    expected = torch.nn.functional.layer_norm(scaled.permute(0, 2, 3, 1), scaled.shape[1:2], eps=1e-5)
    assert torch.allclose(eps5(scaled), expected.permute(0, 3, 1, 2), atol=1e-5)


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 4])
def test_frozen_stages(name, frozen_stages):
    frozen_stages = min(frozen_stages, len(ZooBackbone(name).out_indices))  # 4: all stages
    backbone = ZooBackbone(name, frozen_stages=frozen_stages)
    backbone.train()
    groups = backbone._stage_groups
    frozen = {n for g in groups[:frozen_stages + 1] for n in g}
    for n, p in backbone.model.named_parameters():
        assert p.requires_grad == (n not in frozen), n
    if frozen_stages >= 0:
        assert frozen, 'the stem must freeze'
    # frozen modules stay in eval mode after train()
    for module_name, module in backbone.model.named_modules():
        params = [f'{module_name}.{n}' if module_name else n for n, _ in module.named_parameters()]
        if isinstance(module, _BatchNorm) and params and all(p in frozen for p in params):
            assert not module.training, module_name
    # and their statistics do not move
    bn = next((m for n, m in backbone.model.named_modules()
               if isinstance(m, _BatchNorm) and all(f'{n}.{pn}' in frozen for pn, _ in m.named_parameters())), None)
    if frozen_stages >= 1 and bn is not None:  # (families without BatchNorm have no statistics)
        before = bn.running_mean.clone()
        backbone(torch.randn(2, 3, 64, 64))
        assert torch.equal(bn.running_mean, before)


@pytest.mark.parametrize('name', BACKBONES)
def test_norm_eval_keeps_batchnorm_in_eval_mode(name):
    backbone = ZooBackbone(name, norm_eval=True)
    backbone.train()
    bns = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        pytest.skip(f'{name} has no BatchNorm')
    assert not any(m.training for m in bns)
    assert ZooBackbone(name, norm_eval=False).train().model.training


@pytest.mark.parametrize('name', BACKBONES)
def test_with_cp_gives_the_same_gradients(name):
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        backbone = ZooBackbone(name, with_cp=with_cp).train()
        sum(o.sum() for o in backbone(x)).backward()
        grads.append([p.grad for p in backbone.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(*grads))


@pytest.mark.parametrize('fixture', [n for n in parity_fixture_names() if n in list_models()])
def test_init_cfg_loads_official_checkpoint_through_the_family_filter(fixture, tmp_path):
    path = str(parity_checkpoint(fixture, tmp_path / 'official.pth'))
    backbone = ZooBackbone(fixture, init_cfg=dict(type='Pretrained', checkpoint=path))
    backbone.init_weights()
    backbone.eval()
    ref = timm.create_model(fixture, pretrained=True, features_only=True,
                            pretrained_cfg_overlay=dict(file=path)).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(backbone(x), ref(x)))
    # a backbone saved by an mm run (with the detector's 'backbone.' prefix) loads back
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in backbone.state_dict().items()},
                'meta': {}}, tmp_path / 'det.pth')
    again = ZooBackbone(fixture, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'det.pth')))
    again.init_weights()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(again.eval()(x), ref(x)))


def test_init_cfg_with_a_checkpoint_of_another_variant_fails_clearly(tmp_path):
    fixture = next(n for n in parity_fixture_names() if n in list_models())
    family_models = [n for n in list_models() if n != fixture and n.split('_')[0] == fixture.split('_')[0]]
    path = str(parity_checkpoint(fixture, tmp_path / 'official.pth'))
    backbone = ZooBackbone(family_models[0], init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match='shape mismatches'):
        backbone.init_weights()


@pytest.mark.parametrize('alias', sorted(FAMILY_ALIASES))
def test_family_aliases_build_in_mmdet_and_mmseg_scopes(alias):
    prefix, default = FAMILY_ALIASES[alias]
    built = MODELS.build(dict(type=alias))
    assert built.model_name == prefix + default
    for scope in ('mmdet', 'mmseg'):
        registry = importlib.import_module(f'{scope}.registry').MODELS
        backbone = registry.build(dict(type=alias, arch=default, out_indices=(1, 2)))
        assert backbone.out_indices == (1, 2)
    with pytest.raises(ValueError, match='has no arch'):
        MODELS.build(dict(type=alias, arch='nope'))
    # an arch of another family is refused (HaloNet's archs are full model names)
    other = next(n for n in list_models() if family_of(n) != family_of(prefix + default))
    with pytest.raises(ValueError, match='has no arch'):
        MODELS.build(dict(type=alias, arch=other.removeprefix(prefix)))


def test_bad_arguments():
    name = BACKBONES[0]
    with pytest.raises(ValueError, match='unknown zoo model'):
        ZooBackbone('resnet50')
    with pytest.raises(ValueError, match='frozen_stages'):
        ZooBackbone(name, frozen_stages=9)
    with pytest.raises(ValueError, match='out_indices'):
        ZooBackbone(name, out_indices=(0, 7))

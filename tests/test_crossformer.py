"""CrossFormer / CrossFormer++: official dense outputs at padded sizes, no state kept between
inputs, group size / interval as arguments, the v1 long-distance grouping (lda_grouping='v1')
against the original release's dense code, ACL placement, checkpoints (v1 buffers, yacs
config), manual-download hosts, backends.

The official logits at 224 are checked by tests/test_parity.py (fixture crossformer_tiny); the
contract suite covers features, export and bad inputs.
"""
from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import timm
import torch

from backbones.crossformer import CrossFormer, CrossFormerAttention, checkpoint_filter_fn
from zoo.checkpoint import CheckpointError
from zoo_testutils import assert_backends_agree_in_training, parity_checkpoint, rel_err, rule_tensor

DATA = Path(__file__).parent / 'data'


def _small_model(**kwargs) -> CrossFormer:
    """A narrow CrossFormer with SDA and LDA blocks in every stage (cheap to build and run)."""
    torch.manual_seed(0)
    return CrossFormer(**dict(dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), num_classes=10), **kwargs))


@pytest.fixture(scope='module')
def tiny_file(tmp_path_factory) -> Path:
    return parity_checkpoint('crossformer_tiny', tmp_path_factory.mktemp('crossformer') / 'tiny.pth')


@pytest.fixture(scope='module')
def dense_tiny(tiny_file):
    # The official dense recipes: G = 7, I = (8, 4, 2, 1) (the classification defaults of v1).
    return timm.create_model('crossformer_tiny', pretrained=True, group_size=7, interval=(8, 4, 2, 1),
                             pretrained_cfg_overlay=dict(file=str(tiny_file))).eval()


def test_official_dense_backbone_outputs_at_padded_sizes(dense_tiny):
    # 96x160: stages 0/1 pad to multiples of G*I (LDA) and G (SDA), stages 2/3 are smaller
    # than a group (whole-stage attention); 256x320: every stage pads.
    recorded = json.loads((DATA / 'crossformer_dense_official.json').read_text())
    for case in recorded['cases']:
        x = torch.randn(1, 3, *case['size'], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            feats = dense_tiny.forward_intermediates(x, intermediates_only=True)
        assert [list(f.shape) for f in feats] == case['shapes']
        for f, means in zip(feats, case['channel_means']):
            assert rel_err(f.mean((2, 3))[0], torch.tensor(means)) <= 1e-4, case['size']


def test_small_input_then_large_equals_large_alone(dense_tiny):
    # The official dense backbone turns a block's LDA into SDA for good once it sees a map
    # no larger than its group; here the choice is made per call.
    # 128x160: stage 2 (8 x 10) runs LDA with I = 2; 64x96: stage 2 (4 x 6) is one group.
    large = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    small = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    model = dense_tiny
    with torch.no_grad():
        alone = model.forward_intermediates(large, intermediates_only=True)
        model(small)
        after = model.forward_intermediates(large, intermediates_only=True)
    for a, b in zip(after, alone):
        assert torch.equal(a, b)


def test_grouping_rule():
    sda = CrossFormerAttention(64, 2, group_size=7, interval=4, long_distance=False)
    lda = CrossFormerAttention(64, 2, group_size=7, interval=4, long_distance=True)
    assert sda.grouping((20, 30)) == ((7, 7), 1)
    assert lda.grouping((20, 30)) == ((7, 7), 4)
    assert lda.grouping((8, 300)) == ((7, 7), 4)
    assert lda.grouping((7, 300)) == ((7, 300), 1)  # min side <= G: the whole stage
    assert sda.grouping((3, 5)) == ((3, 5), 1)
    with pytest.raises(ValueError, match='group_size must be a positive int'):
        CrossFormerAttention(64, 2, group_size=0)


def test_group_size_and_interval_are_arguments_with_the_same_checkpoint():
    pp = dict(group_size=(4, 4, 14, 7), interval=(4, 2, 1, 1), acl=True)
    classify = _small_model(**pp).eval()
    dense = _small_model(**dict(pp, group_size=7, interval=(8, 4, 2, 1))).eval()
    dense.load_state_dict(classify.state_dict(), strict=True)
    assert [s.blocks[1].attn.group_size for s in dense.stages] == [7] * 4
    assert dense.stages[0].blocks[1].attn.interval == 8 and classify.stages[0].blocks[1].attn.interval == 4
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert not torch.allclose(classify(x), dense(x))
    with pytest.raises(ValueError, match='group_size needs one entry per stage'):
        _small_model(group_size=(7, 7))
    with torch.device('meta'):
        model = timm.create_model('crossformer_pp_small', group_size=7, interval=(8, 4, 2, 1))
    assert model.group_size == (7,) * 4 and model.stages[0].blocks[1].attn.interval == 8


def test_acl_after_every_third_block_but_the_last():
    with torch.device('meta'):
        huge = timm.create_model('crossformer_pp_huge')
        v1 = timm.create_model('crossformer_base')
    acl = [[j for j, b in enumerate(s.blocks) if b.ex_conv is not None] for s in huge.stages]
    assert acl == [[2], [2], [2, 5, 8, 11, 14], []]
    assert all(b.ex_conv is None for s in v1.stages for b in s.blocks)
    assert [b.attn.long_distance for b in huge.stages[0].blocks] == [False, True] * 3


def test_official_checkpoint_keys_and_other_variant(tiny_file):
    official = torch.load(tiny_file, weights_only=True)['model']
    assert any(k.endswith('.attn.biases') for k in official)  # v1 files carry these buffers
    with torch.device('meta'):
        model = timm.create_model('crossformer_tiny')
    converted = checkpoint_filter_fn(official, model)
    assert set(converted) == set(model.state_dict())
    assert checkpoint_filter_fn(converted, model) is converted  # our layout passes through
    with pytest.raises(CheckpointError, match='fits crossformer_tiny'):
        timm.create_model('crossformer_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(tiny_file)))


def _save_with_yacs_config(state_dict: dict, path: Path) -> None:
    """Save ``{'model', 'optimizer', 'lr_scheduler', 'config', 'epoch'}`` as the official
    main.py does, with the config pickled as ``yacs.config.CfgNode`` (a stand-in class of that
    name: yacs is not a dependency)."""
    module = types.ModuleType('yacs.config')

    class CfgNode(dict):  # like yacs: a dict subclass with an attribute in __dict__
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__['__immutable__'] = False

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    module.CfgNode = CfgNode
    saved = {name: sys.modules.get(name) for name in ('yacs', 'yacs.config')}
    sys.modules['yacs'], sys.modules['yacs.config'] = types.ModuleType('yacs'), module
    try:
        config = CfgNode({'MODEL': CfgNode({'TYPE': 'cross-scale', 'NAME': 'cros_tiny_patch4_group7_224'}),
                          'DATA': CfgNode({'IMG_SIZE': 224})})
        torch.save({'model': state_dict, 'optimizer': {}, 'lr_scheduler': {}, 'config': config,
                    'epoch': 299, 'max_accuracy': 81.5}, path)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    assert b'yacs.config' in path.read_bytes() and b'CfgNode' in path.read_bytes()


def test_checkpoint_with_a_yacs_config_loads_safely(tiny_file, tmp_path):
    path = tmp_path / 'crossformer-t.pth'
    _save_with_yacs_config(torch.load(tiny_file, weights_only=True)['model'], path)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses the config
        torch.load(path, weights_only=True)
    model = timm.create_model('crossformer_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    expected = checkpoint_filter_fn(torch.load(tiny_file, weights_only=True)['model'], model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


@pytest.mark.parametrize('name, host', [('crossformer_small', 'drive.google.com'),
                                        ('crossformer_pp_small', 'pan.baidu.com')])
def test_pretrained_names_the_page_to_download_from(name, host):
    url = timm.models.get_pretrained_cfg(f'{name}.official_in1k').url
    with pytest.raises(CheckpointError) as info:
        timm.create_model(name, pretrained=True)
    message = str(info.value)
    assert host in message and url in message and 'pretrained_cfg_overlay=dict(file=' in message


def test_backends_agree_on_the_model_forward_and_backward():
    x = torch.randn(1, 3, 100, 76)  # every stage pads; the last two attend over the whole stage
    assert_backends_agree_in_training(_small_model, x)


def test_position_bias_is_cached_in_eval_and_follows_new_weights():
    model = _small_model().eval()
    x = torch.randn(1, 3, 64, 64)
    dpb = model.stages[2].blocks[0].attn.pos
    with torch.no_grad():
        a = model(x)
        cached = dict(dpb._cache)
        assert len(cached) == 1
        b = model(x)
        assert all(dpb._cache[k] is v for k, v in cached.items())
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        for p in model.parameters():
            if p.ndim == 1:
                p.mul_(1.1)
        c = model(x)
        fresh = _small_model().eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(c, fresh(x))
        assert not torch.allclose(a, c)


# --- the v1 long-distance grouping (branch crossformer of the official repository) ---------------


def _official_dense_weights(fixture: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A dense parity fixture and its official dense backbone's weights (the fill rule)."""
    fx = json.loads((DATA / 'dense_parity' / f'{fixture}.json').read_text())
    return fx, {key: rule_tensor(key, shape) for key, shape, *_ in fx['state_dict']}


def test_v1_dense_outputs_of_the_semantic_fpn_recipe():
    # The v1 Semantic FPN backbone (G = (14, 14, 7, 7), I = (16, 8, 2, 1)), outputs recorded from
    # the original release's dense code. 192x416 pads every LDA (48 x 104 to 48 x 112 at I = 16)
    # and its last stage (6 x 13) is smaller than G: v1 then attends in 6 x 6 groups.
    fx, official = _official_dense_weights('crossformer_small_fpn_seg')
    assert fx['official_branch'] == 'crossformer' and fx['official_kwargs']['crs_interval'] == [16, 8, 2, 1]
    torch.set_num_threads(1)
    models = {}
    for grouping in ('v1', 'main'):
        model = timm.create_model('crossformer_small', num_classes=0, group_size=(14, 14, 7, 7),
                                  interval=(16, 8, 2, 1), lda_grouping=grouping).eval()
        missing, unexpected = model.load_state_dict(checkpoint_filter_fn(official, model), strict=False)
        assert set(missing) == {'norm.weight', 'norm.bias'} and not unexpected  # no classifier norm
        models[grouping] = model
    for case in fx['cases']:
        x = torch.randn(*case['input']['shape'], generator=torch.Generator().manual_seed(case['input']['seed']))
        with torch.no_grad():
            feats = models['v1'].forward_intermediates(x, intermediates_only=True)
        for i, (f, ref) in enumerate(zip(feats, case['outputs'], strict=True)):
            assert list(f.shape) == ref['shape']
            assert rel_err(f[0].mean((1, 2)), torch.tensor(ref['channel_means'])) <= 1e-4, (case['input'], i)
            idx = torch.randint(0, f.numel(), (len(ref['samples']),), generator=torch.Generator().manual_seed(i))
            assert rel_err(f.flatten()[idx], torch.tensor(ref['samples'])) <= 1e-4, (case['input'], i)
    # Branch main's grouping on the same weights is far off from stage 2 on. (Stages 0 and 1
    # agree here: while a map fits in one (G*I) x (G*I) region, a main group holds the same
    # real tokens as a v1 group, and the DPB depends only on relative offsets.)
    with torch.no_grad():
        feats = models['main'].forward_intermediates(x, intermediates_only=True)
    assert rel_err(feats[-1][0].mean((1, 2)), torch.tensor(case['outputs'][-1]['channel_means'])) > 1e-2


def test_v1_grouping_rule():
    sda = CrossFormerAttention(64, 2, group_size=7, interval=8, long_distance=False, lda_grouping='v1')
    lda = CrossFormerAttention(64, 2, group_size=7, interval=8, long_distance=True, lda_grouping='v1')
    assert lda.grouping((64, 96)) == ((8, 12), 8)  # I x I groups of 8 x 12 tokens, 8 apart
    assert lda.grouping((60, 90)) == ((8, 12), 8)  # padded to 64 x 96
    assert sda.grouping((64, 96)) == ((7, 7), 1)
    # min side <= G: square groups of side min(H, W) for SDA and LDA alike (main: the whole stage)
    assert lda.grouping((6, 13)) == ((6, 6), 1) and sda.grouping((13, 7)) == ((7, 7), 1)
    assert not lda.whole_stage((6, 13))
    main = CrossFormerAttention(64, 2, group_size=7, interval=8, long_distance=True)
    assert main.grouping((64, 96)) == ((7, 7), 8) and main.grouping((6, 13)) == ((6, 13), 1)
    with pytest.raises(ValueError, match='lda_grouping must be one of'):
        CrossFormerAttention(64, 2, lda_grouping='v2')
    with pytest.raises(ValueError, match='lda_grouping must be one of'):
        _small_model(lda_grouping='crossformer')


def test_v1_and_main_share_weights_agree_at_224_and_differ_at_dense_sizes():
    main = _small_model(group_size=7, interval=(8, 4, 2, 1)).eval()
    v1 = _small_model(group_size=7, interval=(8, 4, 2, 1), lda_grouping='v1').eval()
    assert v1.state_dict().keys() == main.state_dict().keys()
    v1.load_state_dict(main.state_dict(), strict=True)  # no new parameters
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(v1(x), main(x), atol=1e-5, rtol=1e-5)
        x = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(1))
        ours = v1.forward_intermediates(x, intermediates_only=True)
        theirs = main.forward_intermediates(x, intermediates_only=True)
    # (every stage: stage 0 has 64 x 80 tokens, more than one 56 x 56 region of branch main)
    assert all(rel_err(a, b) > 1e-3 for a, b in zip(ours, theirs)), [rel_err(a, b) for a, b in zip(ours, theirs)]


def test_v1_small_input_then_large_equals_large_alone():
    # The v1 dense code stores min(H, W) as the block's group size once a map is no larger than
    # its group; here every call decides for itself.
    model = _small_model(lda_grouping='v1').eval()
    large = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(1))
    small = torch.randn(1, 3, 160, 96, generator=torch.Generator().manual_seed(2))  # stage 2: 10 x 6
    with torch.no_grad():
        alone = model.forward_intermediates(large, intermediates_only=True)
        model(small)
        after = model.forward_intermediates(large, intermediates_only=True)
    for a, b in zip(after, alone, strict=True):
        assert torch.equal(a, b)


def test_v1_backends_agree_on_the_model_forward_and_backward():
    x = torch.randn(1, 3, 100, 76)  # every SDA and the stage-0 LDA pad; the last stages are small
    assert_backends_agree_in_training(lambda: _small_model(lda_grouping='v1'), x)


def test_v1_grouping_exports_to_onnx_at_a_dense_size(tmp_path):
    pytest.importorskip('onnxruntime')
    from zoo.export import check_onnx, export_onnx
    model = _small_model(lda_grouping='v1', interval=(4, 2, 2, 1)).eval()
    info = export_onnx(model, tmp_path / 'v1.onnx', input_size=(1, 3, 200, 136))  # pads LDA at stage 0
    errors = check_onnx(model, info.path, torch.randn(1, 3, 200, 136))
    assert max(errors.values()) <= 1e-4, errors

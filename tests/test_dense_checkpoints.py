"""Official dense releases load whole: ``load_from`` through tools/test.py, ``init_cfg``, ``--dense``.

The files are written in the layout the official dense repositories save (mmdet 2.x / mmseg
0.x: ``{'meta': ..., 'state_dict': {'backbone.<official key>': ..., 'neck.*', heads}}``),
with the backbone keys of the official files (the parity fixtures' key lists plus the
official per-output norms) and deterministic weights. What arrived is checked by value: every
tensor of the file must be in the model, and every tensor of the model must come from the
file, whatever the keys became.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
import zoo.mm  # noqa: E402,F401
from mmengine.runner.checkpoint import load_checkpoint  # noqa: E402

from zoo.checkpoint import CheckpointError, load_checkpoint_file  # noqa: E402
from zoo.mm import ZooBackbone  # noqa: E402
from zoo.mm.checkpoint import ZooRunner, build_model_from_config, load_detector_checkpoint  # noqa: E402
sys.path.append(str(Path(__file__).resolve().parents[1] / 'tools'))  # the toy-run helpers (not a package)
from toy_training import CONFIG_DIR, load_tool  # noqa: E402
from zoo_testutils import parity_fixture, rule_tensor  # noqa: E402

RETINANET = CONFIG_DIR / 'toy' / 'retinanet_van-b0_fpn_toy-coco.py'
UPERNET = CONFIG_DIR / 'toy' / 'van-b0_upernet_toy-ade.py'
# The toy RetinaNet with a BiFormer-T backbone as the official detection code builds it: four
# outputs, each with its extra norm (extra_norms.{i} in the official files).
BIFORMER_OPTIONS = {
    'model.backbone.type': 'BiFormer', 'model.backbone.arch': 'tiny', 'model.backbone.out_norms': True,
    'model.backbone.model_kwargs.n_win': 8, 'model.neck.in_channels': [64, 128, 256, 512]}


pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


def official_backbone(name: str, out_norms: dict[int, int] | None = None,
                      norm_key: str = 'extra_norms.{}.') -> dict[str, torch.Tensor]:
    """An official dense backbone's weights: the classification keys without the classifier
    and final norm, plus one LayerNorm per output stage ``{stage: channels}``."""
    state_dict = {}
    for key, shape, dtype, kind, *values in parity_fixture(name)['state_dict']:
        if key.startswith(('head.', 'norm.')):
            continue
        state_dict[key] = (torch.tensor(values[0], dtype=getattr(torch, dtype)).reshape(shape)
                           if kind == 'literal' else rule_tensor(key, shape))
    for stage, channels in (out_norms or {}).items():
        for name_ in ('weight', 'bias'):
            key = norm_key.format(stage) + name_
            state_dict[key] = rule_tensor(key, [channels])
    return state_dict


def official_detector_file(path: Path, model: torch.nn.Module, backbone: dict[str, torch.Tensor]) -> Path:
    """A whole model in the official layout: the official backbone keys under ``backbone.``,
    the neck and heads under their mmdet 2.x / mmseg 0.x names (the same as today's, see
    tests/data/dense_layouts), deterministic weights throughout."""
    state_dict = {'backbone.' + k: v for k, v in backbone.items()}
    for key, value in model.state_dict().items():
        if not key.startswith('backbone.'):
            state_dict[key] = (torch.zeros_like(value) if key.endswith('num_batches_tracked')
                               else rule_tensor(key, list(value.shape)))
    meta = {'mmdet_version': '2.25.0', 'CLASSES': ('circle', 'square', 'triangle'),
            'config': "model = dict(type='RetinaNet', backbone=dict(type='BiFormer_mm'))"}
    torch.save({'meta': meta, 'state_dict': state_dict, 'optimizer': {}}, path)
    return path


def _fingerprints(tensors) -> list[str]:
    return sorted(hashlib.sha1(t.detach().contiguous().numpy().tobytes() + str(tuple(t.shape)).encode()).hexdigest()
                  for t in tensors if t.numel() and t.is_floating_point())


def assert_every_tensor_arrived(model_state: dict[str, torch.Tensor], file_state: dict[str, torch.Tensor]) -> None:
    assert len(model_state) == len(file_state)
    assert _fingerprints(model_state.values()) == _fingerprints(file_state.values())


def _model(config: Path, options: dict | None = None) -> torch.nn.Module:
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from zoo.mm.compat import sync_bn_to_bn
    cfg = Config.fromfile(str(config))
    if options:
        cfg.merge_from_dict(options)
    sync_bn_to_bn(cfg.model)
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    toy = load_tool('make_toy_dataset')
    root = tmp_path_factory.mktemp('toy')
    toy.make_coco(root, seed=0, num_train=2, num_val=2)
    toy.make_ade(root, seed=0, num_train=2, num_val=2)
    return root


def _run_tools_test(monkeypatch, config: Path, checkpoint: Path, work_dir: Path, options: dict,
                    flags: list[str] = ()) -> dict:
    """tools/test.py in this process; returns the state of the model it evaluated.

    Each run names its own visualizer: mmengine hands a later Runner in the process the first
    one's instance of a name, with that run's (maybe deleted) work dir.
    """
    seen = {}
    original = ZooRunner.test

    def test_and_keep_state(runner):
        metrics = original(runner)
        seen.update(runner.model.state_dict())
        return metrics

    monkeypatch.setattr(ZooRunner, 'test', test_and_keep_state)
    args = [str(config), str(checkpoint), '--work-dir', str(work_dir), *flags, '--cfg-options',
            f'visualizer.name=dense_{work_dir.parent.name}_{work_dir.name}', *(f'{k}={v}' for k, v in options.items())]
    load_tool('test').main([a.replace(' ', '') for a in args])
    return seen


def test_official_detector_file_loads_through_load_from(toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv('ZOO_TOY_DATA', str(toy_data))
    model = _model(RETINANET, BIFORMER_OPTIONS)
    backbone = official_backbone('biformer_tiny', {0: 64, 1: 128, 2: 256, 3: 512})
    path = official_detector_file(tmp_path / 'official_retinanet.pth', model, backbone)
    seen = _run_tools_test(monkeypatch, RETINANET, path, tmp_path / 'det', BIFORMER_OPTIONS)
    assert_every_tensor_arrived(seen, load_checkpoint_file(path)['state_dict'])


# The toy UperNet with a multi-scale and flip test, as the official UperNet recipes evaluate.
UPERNET_TTA = f"""_base_ = '{UPERNET}'
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(256 * r), int(256 * r)), keep_ratio=True) for r in (0.75, 1.0)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=True)],
        [dict(type='PackSegInputs')]]),
]
"""


@pytest.mark.parametrize('tta', [False, True], ids=['single-scale', 'tta'])
def test_official_segmentor_file_loads_through_load_from(toy_data, tmp_path, monkeypatch, tta):
    monkeypatch.setenv('ZOO_TOY_DATA', str(toy_data))
    config = UPERNET
    if tta:
        config = tmp_path / 'upernet_tta.py'
        config.write_text(UPERNET_TTA)
    model = _model(UPERNET)
    backbone = official_backbone('van_b0')  # VAN-Segmentation: the stage norms are the output norms
    path = official_detector_file(tmp_path / 'official_upernet.pth', model, backbone)
    seen = _run_tools_test(monkeypatch, config, path, tmp_path / 'seg', {}, ['--tta'] if tta else [])
    if tta:  # the segmentor inside the test-time augmentation wrapper
        assert all(k.startswith('module.') for k in seen)
    assert_every_tensor_arrived(seen, load_checkpoint_file(path)['state_dict'])


def test_tta_needs_the_config_to_define_it(toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv('ZOO_TOY_DATA', str(toy_data))
    with pytest.raises(SystemExit, match='--tta: the config has no tta_pipeline'):
        load_tool('test').main([str(RETINANET), str(tmp_path / 'x.pth'), '--tta'])


def test_load_from_with_a_backbone_that_does_not_fit_fails_loudly(tmp_path):
    model = _model(RETINANET, BIFORMER_OPTIONS)
    backbone = official_backbone('biformer_tiny', {0: 64, 1: 128, 2: 256, 3: 512})
    path = official_detector_file(tmp_path / 'official.pth', model, backbone)
    # Another variant's backbone: BiFormer-T weights into a VAN-B0 RetinaNet.
    with pytest.raises(CheckpointError, match=r'(?s)does not load into the RetinaNet.*van_b0.*model_cards/van.md'):
        load_detector_checkpoint(_model(RETINANET), path)
    # mmengine's own loader (what load_from uses without the zoo's runner) fails too.
    with pytest.raises(CheckpointError, match='van_b0'):
        load_checkpoint(_model(RETINANET), str(path), strict=False)
    # Output norms on other stages than the config builds.
    options = dict(BIFORMER_OPTIONS, **{'model.backbone.out_norms': (False, True, True, True)})
    with pytest.raises(CheckpointError, match=r'on stages \[0, 1, 2, 3\].*builds them on stages \[1, 2, 3\]'):
        load_detector_checkpoint(_model(RETINANET, options), path)
    # A classification file has no backbone.* keys: the backbone would stay untouched.
    classification = tmp_path / 'classification.pth'
    torch.save({'model': official_backbone('biformer_tiny')}, classification)
    with pytest.raises(CheckpointError, match='no weights for the backbone'):
        load_checkpoint(model, str(classification), strict=False)


def test_neck_or_head_that_does_not_fit_is_listed_with_what_the_file_is(tmp_path):
    model = _model(RETINANET, BIFORMER_OPTIONS)
    path = official_detector_file(tmp_path / 'official.pth', model,
                                  official_backbone('biformer_tiny', {0: 64, 1: 128, 2: 256, 3: 512}))
    checkpoint = load_checkpoint_file(path)
    checkpoint['state_dict']['bbox_head.retina_cls_old.weight'] = checkpoint['state_dict'].pop('bbox_head.retina_cls.weight')
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as info:
        load_detector_checkpoint(model, path, config='retinanet_biformer-t.py')
    message = str(info.value)
    assert 'missing from the file (1): bbox_head.retina_cls.weight' in message
    assert 'not in the model (1): bbox_head.retina_cls_old.weight' in message
    assert 'mmdet 2.25.0' in message and 'a RetinaNet with a BiFormer_mm backbone' in message
    assert 'retinanet_biformer-t.py' in message and 'model_cards/biformer.md' in message


def test_init_cfg_takes_the_backbone_of_a_dense_file(tmp_path):
    norms = {1: 128, 2: 256, 3: 512}
    backbone = official_backbone('biformer_tiny', norms)
    path = tmp_path / 'dense.pth'
    torch.save({'meta': {}, 'state_dict': {'backbone.' + k: v for k, v in backbone.items()},
                'neck.lateral_convs.0.conv.weight': torch.zeros(1)}, path)
    ours = ZooBackbone('biformer_tiny', out_norms=(False, True, True, True),
                       init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    for j, stage in enumerate((1, 2, 3), start=1):
        assert torch.equal(ours.out_norms[j].weight, backbone[f'extra_norms.{stage}.weight'])
    assert torch.equal(ours.model.stages[0].blocks[0].attn.lepe.weight, backbone['stages.0.0.attn.lepe.weight'])
    # A config without those norms refuses the file, and says which stages have them.
    plain = ZooBackbone('biformer_tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=r'extra output norms \(extra_norms\.\{\}\.\) on stages \[1, 2, 3\]'):
        plain.init_weights()


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_convert_dense_writes_a_file_that_plain_mmengine_loads(tmp_path, suffix, monkeypatch):
    config = tmp_path / 'retinanet_biformer-t_toy.py'
    config.write_text(
        f"_base_ = '{RETINANET}'\n"
        "model = dict(backbone=dict(type='BiFormer', arch='tiny', out_norms=True, model_kwargs=dict(n_win=8)),\n"
        "             neck=dict(in_channels=[64, 128, 256, 512]))\n")
    model, _ = build_model_from_config(config)
    path = official_detector_file(tmp_path / 'official.pth', model,
                                  official_backbone('biformer_tiny', {0: 64, 1: 128, 2: 256, 3: 512}))
    out = tmp_path / f'converted{suffix}'
    tool = load_tool('convert_checkpoint')
    assert tool.main(['--dense', str(config), str(path), str(out)]) == 0
    fresh, _ = build_model_from_config(config)
    if suffix == '.pth':
        checkpoint = load_checkpoint(fresh, str(out), strict=True)
        assert checkpoint['meta']['dataset_meta']['classes'] == ('circle', 'square', 'triangle')
    else:
        fresh.load_state_dict(load_checkpoint_file(out), strict=True)
    assert_every_tensor_arrived(fresh.state_dict(), load_checkpoint_file(path)['state_dict'])
    # A file that does not fit: a message, exit code 1, nothing written.
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': {'backbone.x': torch.zeros(1)}}, bad)
    assert tool.main(['--dense', str(config), str(bad), str(tmp_path / 'bad_out.pth')]) == 1
    assert not (tmp_path / 'bad_out.pth').exists()


def test_convert_tool_argument_errors(capsys):
    tool = load_tool('convert_checkpoint')
    for argv in (['--dense', 'x.py', 'a.pth'], ['van_b0', 'a.pth']):
        with pytest.raises(SystemExit):
            tool.main(argv)
    assert 'expected' in capsys.readouterr().err


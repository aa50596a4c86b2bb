"""Dense parity: our mm backbones against the official dense backbones' outputs.

Each fixture in tests/data/dense_parity (see its README) holds an official dense backbone's
state-dict layout, whose weights the fill rule rebuilds, and the official code's outputs at two
input sizes. Every config listed with it builds our backbone, which loads the official-layout
dense file through ``init_cfg`` and must reproduce every output within 1e-4 relative. The first
config of each family's smallest fixture runs by default; the rest under ``-m all_variants``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')
import zoo.mm  # noqa: E402,F401
from mmengine.config import Config  # noqa: E402
from mmengine.registry import MODELS  # noqa: E402
from zoo_testutils import DATA, rule_tensor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = sorted((DATA / 'dense_parity').glob('*.json'))
TOLERANCE = 1e-4
pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


@lru_cache(maxsize=None)
def _fixture(path: Path) -> dict:
    return json.loads(path.read_text())


def _cases() -> list:
    params = []
    for path in FIXTURES:
        fx = _fixture(path)
        for i, config in enumerate(fx['configs']):
            default = fx.get('smallest') and i == 0
            params.append(pytest.param(path, config, id=f'{path.stem}-{Path(config).stem}',
                                       marks=() if default else pytest.mark.all_variants))
    return params


def write_official_dense_file(fx: dict, path: Path) -> Path:
    """The fixture's backbone in the official dense layout, as mmdet 2.x / mmseg 0.x save it."""
    state_dict = {}
    for key, shape, dtype, kind, *values in fx['state_dict']:
        if kind == 'literal':
            tensor = torch.tensor(values[0], dtype=getattr(torch, dtype)).reshape(shape)
        else:
            tensor = rule_tensor(key, shape)
        state_dict['backbone.' + key] = tensor
    torch.save({'meta': {}, 'state_dict': state_dict}, path)
    return path


def _backbone_from_config(config: str, checkpoint: Path) -> torch.nn.Module:
    cfg = Config.fromfile(str(REPO / config)).model.backbone
    cfg.init_cfg = dict(type='Pretrained', checkpoint=str(checkpoint))
    backbone = MODELS.build(cfg)
    backbone.init_weights()
    return backbone.eval()


def _samples(out: torch.Tensor, i: int, n: int) -> torch.Tensor:
    idx = torch.randint(0, out.numel(), (n,), generator=torch.Generator().manual_seed(i))
    return out.flatten()[idx]


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def test_fixtures_are_there_for_every_family_with_official_dense_code():
    families = {_fixture(p)['configs'][0].split('/')[1] for p in FIXTURES if _fixture(p).get('smallest')}
    smallest = [p.stem for p in FIXTURES if _fixture(p).get('smallest')]
    assert {'biformer', 'litv2', 'crossformer', 'ravlt', 'davit', 'shvit', 'van'} <= families, smallest


@pytest.mark.parametrize('path,config', _cases())
def test_official_dense_outputs(path, config, tmp_path):
    fx = _fixture(path)
    backbone = _backbone_from_config(config, write_official_dense_file(fx, tmp_path / 'official.pth'))
    for case in fx['cases']:
        spec = case['input']
        x = torch.randn(*spec['shape'], generator=torch.Generator().manual_seed(spec['seed']))
        with torch.no_grad():
            outs = backbone(x)
        assert len(outs) == len(case['outputs'])
        size = tuple(spec['shape'][2:])
        for i, (ours, ref) in enumerate(zip(outs, case['outputs'])):
            assert list(ours.shape) == ref['shape'], (size, i)
            means = ours[0].mean((1, 2))
            assert _rel(means, torch.tensor(ref['channel_means'])) <= TOLERANCE, (size, i, 'channel means')
            samples = torch.tensor(ref['samples'])
            assert _rel(_samples(ours, i, len(samples)), samples) <= TOLERANCE, (size, i, 'samples')



@pytest.mark.parametrize('path', [p for p in FIXTURES if _fixture(p).get('smallest')], ids=lambda p: p.stem)
def test_load_from_takes_the_same_weights_as_init_cfg(path, tmp_path):
    # load_from (mmengine's load_checkpoint into the whole model) converts the official
    # backbone keys in ZooBackbone's own state-dict hook, not through init_cfg: both must
    # arrive at the same tensors, output norms included.
    from mmengine.runner.checkpoint import load_checkpoint
    fx = _fixture(path)
    file = write_official_dense_file(fx, tmp_path / 'official.pth')
    expected = _backbone_from_config(fx['configs'][0], file).state_dict()
    cfg = Config.fromfile(str(REPO / fx['configs'][0])).model.backbone
    cfg.pop('init_cfg', None)
    detector = torch.nn.Module()
    detector.backbone = MODELS.build(cfg)
    load_checkpoint(detector, str(file), strict=True)
    loaded = detector.backbone.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)

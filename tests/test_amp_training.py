"""Mixed-precision training through tools/train.py --amp: bf16 on CPU trains like float32.

The toy RetinaNet and UperNet (configs/toy) with VAN-B0 and BiFormer-T backbones train 50
iterations from the same seed in float32 and under ``--amp --amp-dtype bfloat16``; the bf16 run
must end within 10% of the float32 run's loss (the median of the last 20 iterations), at a
learning rate where two runs can be compared (``LR``). An AMP checkpoint resumes to the same
weights and loss scale, and evaluates in float32 with tools/test.py.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
sys.path.append(str(Path(__file__).resolve().parents[1] / 'tools'))  # the toy-run helpers (not a package)
from toy_training import CONFIG_DIR, load_tool, load_toy_config  # noqa: E402

from zoo.mm.compat import admitted  # noqa: E402

toy = load_tool('make_toy_dataset')
train_tool = load_tool('train')
test_tool = load_tool('test')

pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)

# The toy configs (VAN-B0) and the backbone swaps: (type, arch, output channels).
CONFIGS = {'retinanet': CONFIG_DIR / 'toy' / 'retinanet_van-b0_fpn_toy-coco.py',
           'upernet': CONFIG_DIR / 'toy' / 'van-b0_upernet_toy-ade.py'}
BACKBONES = {'van_b0': ('VAN', 'b0', [32, 64, 160, 256]),
             'biformer_tiny': ('BiFormer', 'tiny', [64, 128, 256, 512])}
# Image side and batch per model, small. Not 64 px for RetinaNet: its P6 map is then 1x1, and
# oneDNN's bf16 weight gradient of a stride-2 3x3 convolution on a 1x1 input comes out
# non-finite in about a quarter of the calls here (torch 2.14.1; the loss scaler skips those steps).
RUN = {'retinanet': dict(image_scale=96, batch_size=4), 'upernet': dict(image_scale=64, batch_size=4)}
ITERATIONS = 50
# The toy schedule's 1e-3 trains these from-scratch models at the edge of stability: single
# batches spike (gradient norms 10-40x the usual, clipped) and a run that differs only in
# rounding meets different spikes, so after 50 iterations two runs differ by the chaos, not by
# the precision (RetinaNet BiFormer-T: bf16 / float32 = 1.12 at 1e-3). At 3e-4 RetinaNet's loss
# still falls threefold and UperNet's by 10-20%, and bf16 ends within 4% of float32 in all four.
LR = 3e-4


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('toy')
    toy.make_coco(root, seed=0, num_train=24, num_val=4)
    toy.make_ade(root, seed=0, num_train=24, num_val=4)
    return root


def _config(model: str, backbone: str, data_root: Path, path: Path, **kwargs) -> Path:
    """A toy config with ``backbone``, every iteration's loss logged unsmoothed, written to ``path``."""
    kwargs = dict(dict(max_iters=ITERATIONS, **RUN[model]), **kwargs)
    cfg = load_toy_config(CONFIGS[model], data_root, path.parent / 'unused', **kwargs)  # a unique run name
    kind, arch, channels = BACKBONES[backbone]
    cfg.model.backbone = dict(type=kind, arch=arch)
    if model == 'retinanet':
        cfg.model.neck.in_channels = channels
    else:
        cfg.model.decode_head.in_channels = channels
        cfg.model.auxiliary_head.in_channels = channels[2]
    cfg.optim_wrapper.optimizer.lr = LR
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.window_size = 1
    cfg.dump(str(path))
    return path


def _checkpoint(path: Path) -> dict:
    with admitted():  # what Runner checkpoints hold besides tensors (zoo.mm.compat)
        return torch.load(path, weights_only=True)


def _losses(work_dir: Path) -> np.ndarray:
    scalars = next(work_dir.glob('*/vis_data/scalars.json'))
    return np.array([row['loss'] for row in map(json.loads, scalars.open()) if 'loss' in row])


def _train(model: str, backbone: str, data_root: Path, work_dir: Path, *args: str, **kwargs) -> np.ndarray:
    config = _config(model, backbone, data_root, work_dir.parent / f'{work_dir.name}.py', **kwargs)
    train_tool.main([str(config), '--work-dir', str(work_dir), *args])
    return _losses(work_dir)


def _bf16_trains_like_float32(model: str, backbone: str, data_root: Path, tmp_path: Path) -> None:
    fp32 = _train(model, backbone, data_root, tmp_path / 'fp32')
    bf16 = _train(model, backbone, data_root, tmp_path / 'bf16', '--amp', '--amp-dtype', 'bfloat16')
    assert len(fp32) == len(bf16) == ITERATIONS
    assert np.isfinite(bf16).all(), bf16
    assert not np.array_equal(fp32, bf16)  # autocast was on
    # The final loss: the median of the last 20 iterations. From scratch, single batches spike
    # (gradient norms 10-40x the usual, clipped), and the bf16 run meets its spikes a little
    # elsewhere than the float32 one; a mean of 10 iterations swings by +-15% with them.
    ratio = np.median(bf16[-20:]) / np.median(fp32[-20:])
    assert abs(ratio - 1) < 0.1, (ratio, fp32[-20:], bf16[-20:])
    assert np.median(bf16[-20:]) < 0.95 * bf16[0], bf16  # and it trained
    assert 'loss_scaler' in _checkpoint(tmp_path / 'bf16' / f'iter_{ITERATIONS}.pth')['optimizer']  # AmpOptimWrapper's


# two training runs: in the slow suite, which CI runs, with the RetinaNet ones
@pytest.mark.slow
def test_bf16_upernet_van_b0_trains_like_float32(toy_data, tmp_path):
    _bf16_trains_like_float32('upernet', 'van_b0', toy_data, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('model,backbone', [('retinanet', 'van_b0'), ('retinanet', 'biformer_tiny'),
                                            ('upernet', 'biformer_tiny')])
def test_bf16_trains_like_float32(toy_data, tmp_path, model, backbone):
    _bf16_trains_like_float32(model, backbone, toy_data, tmp_path)


def test_amp_checkpoint_resumes_and_evaluates_in_float32(toy_data, tmp_path):
    # A scale that doubles every step: the resumed run must carry it on, not start again.
    amp = ['--amp', '--amp-dtype', 'bfloat16',
           '--cfg-options', 'optim_wrapper.loss_scale.init_scale=1024.0',
           'optim_wrapper.loss_scale.growth_interval=1', 'randomness.deterministic=True']
    run = dict(max_iters=4, checkpoint_interval=2, batch_size=2, image_scale=96)
    try:
        _train('retinanet', 'van_b0', toy_data, tmp_path / 'a', *amp, **run)
        _train('retinanet', 'van_b0', toy_data, tmp_path / 'b', *amp, '--resume', str(tmp_path / 'a' / 'iter_2.pth'),
               **run)
    finally:
        torch.use_deterministic_algorithms(False)  # mmengine's deterministic mode is process-wide
    uninterrupted, resumed = (_checkpoint(tmp_path / name / 'iter_4.pth') for name in 'ab')
    assert not (tmp_path / 'b' / 'iter_2.pth').exists()  # b started at iteration 2
    assert _checkpoint(tmp_path / 'a' / 'iter_2.pth')['optimizer']['loss_scaler']['scale'] == 2.0 ** 12
    scales = [c['optimizer']['loss_scaler']['scale'] for c in (uninterrupted, resumed)]
    assert scales == [2.0 ** 14] * 2
    for key, value in resumed['state_dict'].items():
        assert torch.equal(value, uninterrupted['state_dict'][key]), key
    assert all(v.dtype == torch.float32 for v in resumed['state_dict'].values() if v.is_floating_point())

    # tools/test.py has no autocast: the AMP run's weights evaluate in float32. Four iterations
    # in, no score passes the config's threshold (COCO metrics of no detections are empty).
    config = _config('retinanet', 'van_b0', toy_data, tmp_path / 'test.py', image_scale=96)
    metrics = test_tool.main([str(config), str(tmp_path / 'b' / 'iter_4.pth'), '--work-dir', str(tmp_path / 'test'),
                              '--cfg-options', 'model.test_cfg.score_thr=0.0'])
    assert 'coco/bbox_mAP' in metrics and all(math.isfinite(v) for v in metrics.values()), metrics


def test_amp_arguments_are_checked(tmp_path):
    config = str(CONFIGS['retinanet'])
    with pytest.raises(SystemExit, match='add --amp'):
        train_tool.build_config(train_tool.parse_args([config, '--amp-dtype', 'bfloat16']))
    with pytest.raises(SystemExit, match="optim_wrapper is 'ApexOptimWrapper'"):
        train_tool.build_config(train_tool.parse_args([config, '--amp', '--cfg-options',
                                                       'optim_wrapper.type=ApexOptimWrapper']))
    with pytest.raises(ValueError, match='trains in float16 or bfloat16'):
        train_tool.CPUAmpOptimWrapper(optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1),
                                      dtype='float64')

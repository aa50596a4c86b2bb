"""Training on the toy datasets: the generator, falling losses, resuming after a crash, torchrun."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pycocotools = pytest.importorskip('pycocotools.coco')
import zoo.mm  # noqa: E402,F401
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import DATASETS, HOOKS, init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parents[1] / 'tools'))  # the toy-run helpers (not a package)
from toy_training import CONFIG_DIR, REPO, load_tool, load_toy_config, train_toy_detector  # noqa: E402

toy = load_tool('make_toy_dataset')
RETINANET = CONFIG_DIR / 'toy' / 'retinanet_van-b0_fpn_toy-coco.py'
SEMANTIC_FPN = CONFIG_DIR / 'toy' / 'van-b0_fpn_toy-ade.py'


pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('toy')
    toy.make_coco(root, seed=0, num_train=24, num_val=8)
    toy.make_ade(root, seed=0, num_train=24, num_val=8)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_toy_datasets_are_deterministic(tmp_path):
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        toy.make_coco(tmp_path / name, seed=seed, num_train=3, num_val=2)
        toy.make_ade(tmp_path / name, seed=seed, num_train=3, num_val=2)
    a, b, c = (_files(tmp_path / n) for n in 'abc')
    assert len(a) == 5 + 2 + 5 * 2  # COCO images and annotation files, ADE images and label maps
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith('.json'))
    # Image i does not depend on how many images the split has.
    toy.make_coco(tmp_path / 'd', seed=0, num_train=5, num_val=2)
    assert (tmp_path / 'd/coco/train/000002.jpg').read_bytes() == a['coco/train/000002.jpg']


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_toy_coco_is_valid(toy_data):
    for split in ('train', 'val'):
        coco = pycocotools.COCO(str(toy_data / 'coco' / 'annotations' / f'instances_{split}.json'))
        assert sorted(c['name'] for c in coco.loadCats(coco.getCatIds())) == ['circle', 'square', 'triangle']
        for image in coco.loadImgs(coco.getImgIds()):
            with Image.open(toy_data / 'coco' / split / image['file_name']) as f:
                assert f.size == (image['width'], image['height'])
                assert 128 <= min(f.size) and max(f.size) <= 256
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image['id']))
            assert 1 <= len(anns) <= 4
            _, shapes = toy.make_scene(toy.scene_rng(0, 'coco', split, image['id'] - 1))
            for ann, shape in zip(anns, shapes):
                mask = coco.annToMask(ann).astype(bool)
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann['bbox']
                # the box bounds the mask, the area is the mask's, the mask is what was drawn
                assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [x, y, x + w, y + h], atol=1.5)
                assert abs(mask.sum() - ann['area']) <= 0.05 * ann['area']
                assert ann['category_id'] == shape.label + 1 and _iou(mask, shape.mask) > 0.95
            boxes = [a['bbox'] for a in anns]  # objects never overlap
            assert all(b1[0] + b1[2] <= b2[0] or b2[0] + b2[2] <= b1[0] or b1[1] + b1[3] <= b2[1]
                       or b2[1] + b2[3] <= b1[1] for i, b1 in enumerate(boxes) for b2 in boxes[i + 1:])


def test_toy_ade_is_valid(toy_data):
    for split in ('training', 'validation'):
        for path in sorted((toy_data / 'ade' / 'images' / split).glob('*.jpg')):
            label = np.asarray(Image.open(toy_data / 'ade' / 'annotations' / split / f'{path.stem}.png'))
            assert label.shape == Image.open(path).size[::-1]
            assert set(np.unique(label)) <= {0, 1, 2, 3} and (label > 0).any()


@pytest.mark.parametrize('config', [RETINANET, SEMANTIC_FPN], ids=['coco', 'ade'])
def test_toy_datasets_load_through_the_config_pipelines(toy_data, config):
    cfg = load_toy_config(config, toy_data, toy_data / 'unused')
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == 24
    sample = dataset[0]['data_samples']
    if cfg.default_scope == 'mmdet':
        gt = sample.gt_instances
        assert len(gt.bboxes) >= 1 and len(gt.masks) == len(gt.bboxes)
    else:  # reduce_zero_label: background becomes 255 (ignored), the shapes 0..2
        assert set(sample.gt_sem_seg.data.unique().tolist()) <= {0, 1, 2, 255}


def test_runs_in_one_process_log_to_their_own_work_dirs(toy_data, tmp_path):
    # A Runner writes its config through its visualizer as soon as it is built; with mm's
    # shared visualizer name the second run's files went into the first run's directory.
    for name in 'ab':
        Runner.from_cfg(load_toy_config(RETINANET, toy_data, tmp_path / name))
    for name in 'ab':
        assert len(list((tmp_path / name).glob('*/vis_data/config.py'))) == 1, name


def _train(cfg) -> tuple[Runner, np.ndarray]:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, runner.message_hub.get_scalar('train/loss').data[0]


# a training run: in the slow suite, which CI runs, with the other training runs
@pytest.mark.slow
def test_retinanet_loss_falls(toy_data, tmp_path):
    cfg = load_toy_config(RETINANET, toy_data, tmp_path, max_iters=30, batch_size=2, image_scale=160)
    _, losses = _train(cfg)
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.85 * losses[:5].mean(), losses


@pytest.mark.slow
def test_semantic_fpn_loss_falls(toy_data, tmp_path):
    # Slower to start than the detector: telling the shapes apart takes their outlines.
    cfg = load_toy_config(SEMANTIC_FPN, toy_data, tmp_path, max_iters=60, batch_size=4, image_scale=128)
    runner, losses = _train(cfg)
    assert len(losses) == 60 and np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.85 * losses[:10].mean(), losses
    assert runner.message_hub.get_scalar('val/mIoU').current() >= 0  # evaluated at the end


class _Crash(RuntimeError):
    pass


@HOOKS.register_module(name='CrashAfterIteration', force=True)
class CrashAfterIteration(Hook):
    """Kills the run after a given iteration (after that iteration's checkpoint, if any)."""

    priority = 'LOWEST'

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise _Crash(f'killed after iteration {self.iteration}')


@pytest.mark.slow
def test_resuming_after_a_crash_ends_with_the_same_weights(toy_data, tmp_path):
    def config(work_dir: Path):
        cfg = load_toy_config(RETINANET, toy_data, work_dir, max_iters=6, checkpoint_interval=3,
                              batch_size=2, image_scale=96)
        cfg.randomness = dict(seed=0, deterministic=True)
        cfg.train_cfg.val_interval = 100  # no evaluation
        return cfg

    try:
        uninterrupted, _ = _train(config(tmp_path / 'a'))

        crashing = config(tmp_path / 'b')
        crashing.custom_hooks = [dict(type='CrashAfterIteration', iteration=4)]
        with pytest.raises(_Crash):
            _train(crashing)
        assert (tmp_path / 'b' / 'iter_3.pth').is_file() and not (tmp_path / 'b' / 'iter_6.pth').exists()

        resumed_cfg = config(tmp_path / 'b')
        resumed_cfg.resume = True  # from the work dir's last checkpoint: iteration 3
        resumed, losses = _train(resumed_cfg)
    finally:
        torch.use_deterministic_algorithms(False)  # mmengine's deterministic mode is process-wide
    assert resumed.iter == 6
    expected = uninterrupted.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_torchrun(toy_data, tmp_path):
    cfg = load_toy_config(RETINANET, toy_data, tmp_path / 'run', max_iters=4, checkpoint_interval=2,
                          batch_size=2, image_scale=96)
    cfg.default_hooks.logger.interval = 1
    cfg.dump(str(tmp_path / 'config.py'))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1')
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(tmp_path / 'config.py'), '2',
         '--work-dir', str(tmp_path / 'run')],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'run' / 'iter_4.pth').is_file()
    log = next((tmp_path / 'run').glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log and "backend': 'gloo'" in log
    scalars = [json.loads(line) for line in next((tmp_path / 'run').glob('*/vis_data/scalars.json')).open()]
    assert any(s.get('step') == 4 and 'loss' in s for s in scalars)


@pytest.mark.slow
def test_demo_trains_a_toy_detector(tmp_path):
    summary = train_toy_detector(tmp_path)
    assert 'loss' in summary and 'mAP' in summary and '->' in summary

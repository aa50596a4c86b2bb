"""Runner checkpoints load under torch's ``weights_only`` protection; malicious ones do not.

mmengine 0.10.7 calls ``torch.load`` with torch's default, ``weights_only=True`` since torch
2.6. ``zoo.mm.compat`` admits exactly what Runner checkpoints hold; these tests write real
checkpoints (a detector and a segmentor, with ``save_best``) and load them the three ways
mmengine does (``load_checkpoint``, ``resume``, ``load_from``) plus through ``ZooBackbone``.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
import zoo.mm  # noqa: E402,F401
from mmengine.logging.history_buffer import HistoryBuffer  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402
from mmengine.runner import Runner, load_checkpoint  # noqa: E402

from zoo.checkpoint import CheckpointError, load_checkpoint_file  # noqa: E402
from zoo.mm import ZooBackbone  # noqa: E402
from zoo.mm.compat import MMENGINE_CHECKPOINT_GLOBALS, admitted, close_distributed  # noqa: E402
sys.path.append(str(Path(__file__).resolve().parents[1] / 'tools'))  # the toy-run helpers (not a package)
from toy_training import CONFIG_DIR, load_tool, load_toy_config  # noqa: E402

# config, dataset writer, save_best metric: mmseg's best score is a numpy float32 (a two-
# iteration detector finds nothing yet, so it has no score to keep the best of).
RUNS = {
    'detector': ('retinanet_van-b0_fpn_toy-coco.py', 'make_coco', None),
    'segmentor': ('van-b0_fpn_toy-ade.py', 'make_ade', 'mIoU'),
}


pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


def _name(entry) -> str:
    obj = entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'
    return obj


ALLOWED_NAMES = {_name(e) for e in MMENGINE_CHECKPOINT_GLOBALS}


def _config(kind: str, data: Path, work_dir: Path, max_iters: int):
    config, _, best = RUNS[kind]
    cfg = load_toy_config(CONFIG_DIR / 'toy' / config, data, work_dir, max_iters=max_iters,
                          checkpoint_interval=1, batch_size=2, image_scale=64)
    if best:
        cfg.default_hooks.checkpoint.update(save_best=best, rule='greater')
    return cfg


@pytest.fixture(scope='module', params=sorted(RUNS))
def run(request, tmp_path_factory) -> dict:
    """A two-iteration run (with an evaluation) and the files it wrote."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    getattr(load_tool('make_toy_dataset'), RUNS[kind][1])(root / 'data', seed=0, num_train=4, num_val=2)
    cfg = _config(kind, root / 'data', root / 'run', max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    last = root / 'run' / 'iter_2.pth'
    best = next((root / 'run').glob('best_*.pth'), last) if RUNS[kind][2] else last
    return dict(kind=kind, data=root / 'data', root=root, cfg=cfg, last=last, best=best,
                state_dict={k: v.clone() for k, v in runner.model.state_dict().items()})


def test_weights_only_protection_is_on():
    assert not os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    # The fix admits named objects while mmengine loads; torch's process-wide list is untouched.
    process_wide = torch.serialization.get_safe_globals()
    assert not [e for e in MMENGINE_CHECKPOINT_GLOBALS if e in process_wide]


def _globals_in(path: Path) -> set[str]:
    # What torch would refuse without any allow-list (it reports only what is not admitted).
    admitted = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    finally:
        torch.serialization.add_safe_globals(admitted)


def test_runner_checkpoints_hold_only_allow_listed_globals(run):
    for path in (run['last'], run['best']):
        found = _globals_in(path)
        assert found <= ALLOWED_NAMES, found - ALLOWED_NAMES
        assert {'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr', 'numpy.ndarray'} <= found
        with admitted():
            assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []


def test_load_checkpoint(run):
    init_default_scope(run['cfg'].default_scope)
    model = MODELS.build(run['cfg'].model)
    checkpoint = load_checkpoint(model, str(run['best']), map_location='cpu')
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert all(torch.equal(v, run['state_dict'][k]) for k, v in model.state_dict().items())


def test_resume_and_load_from(run):
    cfg = _config(run['kind'], run['data'], run['root'] / 'run', max_iters=3)
    cfg.resume = True  # from the work dir's latest checkpoint, iteration 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 3
    assert len(runner.message_hub.get_scalar('train/loss').data[0]) == 3  # the history came along

    cfg = _config(run['kind'], run['data'], run['root'] / 'finetune', max_iters=1)
    cfg.load_from = str(run['last'])
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    assert all(torch.equal(v, run['state_dict'][k]) for k, v in runner.model.state_dict().items())


def test_zoo_backbone_init_cfg_accepts_a_runner_checkpoint(run):
    backbone = ZooBackbone('van_b0', init_cfg=dict(type='Pretrained', checkpoint=str(run['best'])))
    backbone.init_weights()
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, run['state_dict'][f'backbone.{k}']), k


class _Payload:
    """Pickles as ``func(*args)``: what a malicious checkpoint would run on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious_file(path: Path, payload) -> Path:
    # A Runner-like checkpoint with the payload where a history buffer would be.
    torch.save({'meta': {'iter': 1}, 'state_dict': {'w': torch.zeros(1)},
                'message_hub': {'log_scalars': {'train/loss': payload}}}, path)
    return path


PAYLOADS = {
    'os.system': lambda marker: _Payload(os.system, f'touch {marker}'),
    'eval': lambda marker: _Payload(eval, f"open({str(marker)!r}, 'w')"),
    'getattr-HistoryBuffer-init': lambda marker: _Payload(getattr, HistoryBuffer, '__init__'),
    'getattr-numpy': lambda marker: _Payload(getattr, np.ndarray, 'tofile'),
    'argparse.Namespace': lambda marker: argparse.Namespace(x=1),  # the zoo's list only, not global
}


@pytest.mark.parametrize('payload', sorted(PAYLOADS))
def test_malicious_checkpoints_are_refused(payload, tmp_path):
    path = tmp_path / 'evil.pth'
    marker = path.with_suffix('.pwned')
    _malicious_file(path, PAYLOADS[payload](marker))
    model = torch.nn.Linear(1, 1)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(model, str(path), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError), admitted():
        torch.load(path)
    if payload != 'argparse.Namespace':  # harmless data the zoo's own loader admits on purpose
        with pytest.raises(CheckpointError):
            load_checkpoint_file(path)
    assert not marker.exists()


def test_close_distributed_destroys_the_process_group(tmp_path):
    close_distributed()  # no group yet: nothing to do, no error
    assert not dist.is_initialized()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        close_distributed()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():  # leave no group behind for the other tests
            dist.destroy_process_group()

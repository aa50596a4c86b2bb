"""Training on several machines: tools/dist_train.sh with NNODES/NODE_RANK/MASTER_ADDR/PORT.

Two "machines" on localhost, each a launcher (torchrun) with one CPU process over gloo, train
the toy RetinaNet together; each rank saves its own weights, which must be equal.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@HOOKS.register_module(name='SaveRankState', force=True)
class SaveRankState(Hook):
    """Saves this rank's weights before and after training, with the images it trained on.

    mmengine's checkpoints are written by rank 0 only; this hook lets a test compare ranks.
    (Imported by the training processes through the config's ``custom_imports``.)

    Args:
        out_dir: where ``rank{r}.pth`` goes.
    """

    priority = 'LOWEST'

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.initial: dict[str, torch.Tensor] = {}
        self.images: list[int] = []

    @staticmethod
    def _state(runner) -> dict[str, torch.Tensor]:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def before_train(self, runner) -> None:
        self.initial = self._state(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.images += [sample.img_id for sample in data_batch['data_samples']]

    def after_train(self, runner) -> None:
        rank, world_size = get_dist_info()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(dict(rank=rank, world_size=world_size, images=self.images, initial=self.initial,
                        final=self._state(runner)), self.out_dir / f'rank{rank}.pth')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# two launchers training: in the slow suite, which CI runs
@pytest.mark.slow
def test_two_nodes_end_with_the_same_weights(tmp_path):
    pytest.importorskip('mmdet')
    sys.path.append(str(REPO / 'tools'))  # the toy-run helpers (not a package)
    from toy_training import CONFIG_DIR, load_tool, load_toy_config

    load_tool('make_toy_dataset').make_coco(tmp_path / 'toy', seed=0, num_train=16, num_val=2)
    cfg = load_toy_config(CONFIG_DIR / 'toy' / 'retinanet_van-b0_fpn_toy-coco.py', tmp_path / 'toy',
                          tmp_path / 'unused', max_iters=3, checkpoint_interval=100, batch_size=2, image_scale=64)
    cfg.train_cfg.val_interval = 100  # no evaluation
    # BatchNorm statistics are per rank (mmengine's DDP does not broadcast buffers, SyncBN has
    # no CPU kernel): frozen, every tensor of the model must agree across ranks.
    cfg.model.backbone.norm_eval = True
    cfg.custom_imports.imports.append('test_dist_train')
    cfg.custom_hooks = [dict(type='SaveRankState', out_dir=str(tmp_path / 'ranks'))]
    cfg.env_cfg.dist_cfg.timeout = 120  # a node that never comes fails the other one soon
    cfg.dump(str(tmp_path / 'config.py'))

    env = dict(os.environ, PYTHON=sys.executable, NNODES='2', MASTER_ADDR='127.0.0.1', PORT=str(_free_port()),
               OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get('PYTHONPATH', '')]))
    nodes = []
    try:
        for node_rank in range(2):  # each its own launcher, as on two machines
            nodes.append(subprocess.Popen(
                ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(tmp_path / 'config.py'), '1',
                 '--work-dir', str(tmp_path / f'node{node_rank}')],
                env=dict(env, NODE_RANK=str(node_rank)), cwd=tmp_path, start_new_session=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:  # on a timeout or an error: the launchers and their workers
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]

    ranks = [torch.load(tmp_path / 'ranks' / f'rank{r}.pth', weights_only=True) for r in range(2)]
    assert [(r['rank'], r['world_size']) for r in ranks] == [(0, 2), (1, 2)]
    # The ranks trained on different images, so equal weights mean the gradients were averaged.
    assert len(ranks[0]['images']) == len(ranks[1]['images']) == 3 * 2
    assert ranks[0]['images'] != ranks[1]['images']
    final0, final1 = ranks[0]['final'], ranks[1]['final']
    assert final0.keys() == final1.keys()
    for key in final0:
        assert torch.equal(final0[key], final1[key]), key
    moved = [k for k, v in final0.items() if v.is_floating_point() and not torch.equal(v, ranks[0]['initial'][k])]
    params = [k for k in final0 if 'running' not in k and 'num_batches' not in k]
    assert len(moved) == len(params), sorted(set(params) - set(moved))[:10]

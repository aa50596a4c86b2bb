#!/usr/bin/env python
"""Train an mmdet/mmseg model from a config with mmengine's Runner.

    python tools/train.py configs/toy/retinanet_van-b0_fpn_toy-coco.py
    python tools/train.py CONFIG --work-dir work_dirs/run --resume          # the latest checkpoint
    python tools/train.py CONFIG --resume work_dirs/run/iter_20.pth        # a given one
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=100 randomness.seed=1
    tools/dist_train.sh CONFIG 8                                            # torchrun, 8 processes

Runs on GPUs or on CPU (also multi-process CPU runs under ``torchrun``, with gloo). Imports
``zoo.mm`` first, so the compatibility fixes for current PyTorch apply (``zoo/mm/compat.py``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the zoo itself, also when it is not installed

import zoo.mm  # noqa: E402,F401  (registers the backbones, applies the compatibility fixes)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402

from zoo.mm.checkpoint import ZooRunner  # noqa: E402
from zoo.mm.compat import close_distributed, setup_cpu_distributed  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('config', help='the config file')
    ap.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    ap.add_argument('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
                    help='resume from CHECKPOINT, or from the work dir\'s latest checkpoint if none is given')
    ap.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a GPU)')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                    help='override config entries, e.g. train_cfg.max_iters=100 model.backbone.arch=b1')
    ap.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                    help="'pytorch' under torchrun (tools/dist_train.sh)")
    return ap.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied: work dir, resume, AMP, launcher, overrides.

    Args:
        args: the parsed command line (``config``, ``work_dir``, ``resume``, ``amp``,
            ``cfg_options``, ``launcher``).
    """
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(args.config).stem)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    if args.amp:
        if not torch.cuda.is_available():
            raise SystemExit('--amp needs a GPU: mmengine\'s AmpOptimWrapper does not run on CPU')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.launcher == 'pytorch' and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = build_config(args)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else ZooRunner.from_cfg(cfg)
    try:
        runner.train()
    finally:
        close_distributed()


if __name__ == '__main__':
    main()

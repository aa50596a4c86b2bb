#!/usr/bin/env python
"""Evaluate a checkpoint on a config's test set with mmengine's Runner.

    python tools/test.py configs/toy/retinanet_van-b0_fpn_toy-coco.py \
        work_dirs/retinanet_van-b0_fpn_toy-coco/iter_40.pth
    python tools/test.py CONFIG CHECKPOINT --cfg-options test_evaluator.metric=bbox
    python tools/test.py CONFIG CHECKPOINT --tta    # the config's multi-scale/flip test
    torchrun --nproc_per_node 2 tools/test.py CONFIG CHECKPOINT --launcher pytorch

CHECKPOINT may be a file saved by an mm run or a released detector/segmentor of the official
dense code (mmdet 2.x / mmseg 0.x layout, with the config its model card names): it loads
strictly through ``zoo.mm.ZooRunner`` (every tensor of the model from the file, or an error that
lists the keys). Imports ``zoo.mm`` first, so the compatibility fixes for current PyTorch apply
(checkpoints load under ``weights_only``; see ``zoo/mm/compat.py``).
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
    ap.add_argument('checkpoint', help='the checkpoint file')
    ap.add_argument('--work-dir', help='where the logs go (default: work_dirs/<config name>)')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                    help='override config entries, e.g. test_dataloader.batch_size=4')
    ap.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                    help="'pytorch' under torchrun")
    ap.add_argument('--tta', action='store_true',
                    help="test-time augmentation: the config's tta_pipeline (e.g. the official multi-scale "
                         'and flip test of the UperNet recipes) through its tta_model')
    return ap.parse_args(argv)


def use_tta(cfg: Config) -> None:
    """Test with the config's ``tta_pipeline`` and ``tta_model``, as mmdet's and mmseg's tools do."""
    missing = [k for k in ('tta_pipeline', 'tta_model') if k not in cfg]
    if missing:
        raise SystemExit(f'--tta: the config has no {" or ".join(missing)}; the configs that carry the '
                         "official multi-scale test define both (mmseg's default runtime defines tta_model)")
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # wrappers such as ConcatDataset
        dataset = dataset.dataset
    dataset.pipeline = cfg.tta_pipeline


def main(argv: list[str] | None = None) -> dict:
    """Run the test loop and return its metrics."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(args.config).stem)
    cfg.load_from, cfg.resume = args.checkpoint, False
    if args.tta:
        use_tta(cfg)
    if args.launcher == 'pytorch' and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else ZooRunner.from_cfg(cfg)
    try:
        return runner.test()
    finally:
        close_distributed()


if __name__ == '__main__':
    main()

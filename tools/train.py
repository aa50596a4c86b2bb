#!/usr/bin/env python
"""Train an mmdet/mmseg model from a config with mmengine's Runner.

    python tools/train.py configs/toy/retinanet_van-b0_fpn_toy-coco.py
    python tools/train.py CONFIG --work-dir work_dirs/run --resume          # the latest checkpoint
    python tools/train.py CONFIG --resume work_dirs/run/iter_20.pth        # a given one
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=100 randomness.seed=1
    python tools/train.py CONFIG --amp                                      # mixed precision
    python tools/train.py CONFIG --amp --amp-dtype bfloat16
    tools/dist_train.sh CONFIG 8                                            # torchrun, 8 processes
    NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8  # machine 1 of 2

Runs on GPUs or on CPU (also multi-process and multi-machine CPU runs under ``torchrun``, with
gloo). ``--amp`` trains under autocast with mmengine's ``AmpOptimWrapper``: float16 with dynamic
loss scaling by default on GPUs, bfloat16 on CPU (``CPUAmpOptimWrapper``, the same wrapper on
torch's CPU autocast and gradient scaler). Imports ``zoo.mm`` first, so the compatibility fixes
for current PyTorch apply (``zoo/mm/compat.py``).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the zoo itself, also when it is not installed

import zoo.mm  # noqa: E402,F401  (registers the backbones, applies the compatibility fixes)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.optim import AmpOptimWrapper, OptimWrapper  # noqa: E402
from mmengine.registry import OPTIM_WRAPPERS, RUNNERS  # noqa: E402

from zoo.mm.checkpoint import ZooRunner  # noqa: E402
from zoo.mm.compat import close_distributed, setup_cpu_distributed  # noqa: E402

AMP_DTYPES = ('float16', 'bfloat16')


@OPTIM_WRAPPERS.register_module(force=True)  # tests load this script more than once
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` on CPU: torch's CPU autocast and CPU gradient scaler.

    mmengine 0.10.7's ``AmpOptimWrapper`` cannot be built without an accelerator (its
    ``__init__`` asserts one and builds ``torch.cuda.amp.GradScaler``), and its ``autocast``
    accepts only bfloat16 on CPU. torch has both a CPU ``GradScaler`` and float16 CPU autocast,
    so only construction and the autocast context differ here: the scaled backward, the
    gradient clipping on unscaled gradients, the step skipped on inf/nan and the
    ``loss_scaler`` entry of the optimizer state are mmengine's, as on a GPU.

    Args:
        loss_scale: ``'dynamic'``, a fixed scale, or a dict of ``torch.amp.GradScaler``
            arguments (as for ``AmpOptimWrapper``). bfloat16 has float32's exponent range and
            needs no scaling; the dynamic scaler keeps the GPU code path and only backs off on
            an overflow.
        dtype: the autocast dtype, ``'bfloat16'`` (default, also for None) or ``'float16'``.
        **kwargs: ``OptimWrapper``'s arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, loss_scale: str | float | Mapping = 'dynamic',
                 dtype: str | torch.dtype | None = 'bfloat16', **kwargs) -> None:
        OptimWrapper.__init__(self, **kwargs)  # not AmpOptimWrapper's: it asserts an accelerator
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            scaler_kwargs = {}
        elif isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
            self._scale_update_param = float(loss_scale)  # a fixed scale: update() keeps it
            scaler_kwargs = {'init_scale': float(loss_scale)}
        elif isinstance(loss_scale, Mapping):
            scaler_kwargs = dict(loss_scale)
        else:
            raise TypeError(f"loss_scale must be 'dynamic', a number or a dict of GradScaler arguments, "
                            f'got {loss_scale!r}')
        self.loss_scaler = torch.amp.GradScaler('cpu', **scaler_kwargs)
        name = 'bfloat16' if dtype is None else str(dtype).removeprefix('torch.')  # None: the device's default
        if name not in AMP_DTYPES:
            raise ValueError(f'CPU autocast trains in {" or ".join(AMP_DTYPES)}, got dtype={dtype!r}')
        self.cast_dtype = getattr(torch, name)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """``OptimWrapper``'s context (gradient accumulation) under CPU autocast."""
        with super(AmpOptimWrapper, self).optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('config', help='the config file')
    ap.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    ap.add_argument('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
                    help='resume from CHECKPOINT, or from the work dir\'s latest checkpoint if none is given')
    ap.add_argument('--amp', action='store_true',
                    help="automatic mixed precision with mmengine's AmpOptimWrapper (dynamic loss scaling); "
                         'on CPU under CPU autocast')
    ap.add_argument('--amp-dtype', choices=AMP_DTYPES,
                    help='the autocast dtype of --amp (default: float16 on GPUs, bfloat16 on CPU, where float16 '
                         'runs but is much slower)')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                    help='override config entries, e.g. train_cfg.max_iters=100 model.backbone.arch=b1')
    ap.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                    help="'pytorch' under torchrun (tools/dist_train.sh)")
    return ap.parse_args(argv)


def use_amp(cfg: Config, dtype: str | None) -> None:
    """Train ``cfg`` under autocast: its ``OptimWrapper`` becomes an AMP one, in place.

    On GPUs mmengine's ``AmpOptimWrapper`` (float16 unless ``dtype`` says otherwise), on CPU
    ``CPUAmpOptimWrapper`` (bfloat16 unless ``dtype`` says otherwise); both scale the loss
    dynamically unless the config sets ``optim_wrapper.loss_scale``. A config that already
    asks for AMP keeps its settings (``dtype`` still applies).

    Args:
        cfg: the run's config, with a single ``optim_wrapper``.
        dtype: ``'float16'``, ``'bfloat16'`` or None for the device's default.
    """
    wrapper = cfg.get('optim_wrapper')
    wrapper_type = wrapper.get('type', 'OptimWrapper') if isinstance(wrapper, Mapping) else None
    if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        raise SystemExit(f'--amp replaces a single OptimWrapper (or keeps an AmpOptimWrapper), but the '
                         f"config's optim_wrapper is {wrapper_type or wrapper!r}; set the AMP wrapper in the config")
    if torch.cuda.is_available():
        if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
            raise SystemExit('--amp-dtype bfloat16: this GPU has no bfloat16 support; use --amp-dtype float16')
        wrapper.type = 'AmpOptimWrapper'
    else:
        wrapper.type = 'CPUAmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')
    if dtype is not None:
        wrapper.dtype = dtype


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied: work dir, resume, AMP, launcher, overrides.

    Args:
        args: the parsed command line (``config``, ``work_dir``, ``resume``, ``amp``,
            ``amp_dtype``, ``cfg_options``, ``launcher``).
    """
    if args.amp_dtype and not args.amp:
        raise SystemExit('--amp-dtype sets the dtype of --amp; add --amp')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(args.config).stem)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    amp_in_config = isinstance(cfg.get('optim_wrapper'), Mapping) and cfg.optim_wrapper.get('type') == 'AmpOptimWrapper'
    if args.amp or (amp_in_config and not torch.cuda.is_available()):
        use_amp(cfg, args.amp_dtype)  # also an AMP config on CPU: AmpOptimWrapper cannot be built there
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

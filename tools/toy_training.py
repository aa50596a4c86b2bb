"""Short training runs on the toy datasets: the project demo's detector, and the tests' runs.

A helper module of ``tools/demo.py`` and of the mm tests, not a script and not part of the
``zoo`` package (it reads ``configs/`` and the other ``tools/`` by path, which an installed
package cannot rely on). Import it with ``tools/`` on ``sys.path``.

``train_toy_detector`` generates a small toy COCO set, trains RetinaNet with a VAN-B0 backbone
from scratch for a handful of iterations on CPU, evaluates it and returns a one-line summary.
``load_toy_config`` loads one of ``configs/toy`` for a run on a given toy dataset, optionally
shortened and on smaller images.
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs'
TOY_RETINANET = CONFIG_DIR / 'toy' / 'retinanet_van-b0_fpn_toy-coco.py'

_run_ids = itertools.count()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pipelines(cfg: Config) -> Iterator[list[dict]]:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg.get(loader, {}).get('dataset', {})
        if 'pipeline' in dataset:
            yield dataset['pipeline']


def _rescale_schedule(cfg: Config, max_iters: int) -> None:
    # The toy schedules are iteration-based; stretch the scheduler milestones along.
    old = cfg.train_cfg.max_iters
    for scheduler in cfg.get('param_scheduler', []):
        for key in ('begin', 'end'):
            if key in scheduler:
                scheduler[key] = max(round(scheduler[key] * max_iters / old), 1 if key == 'end' else 0)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters


def load_toy_config(
        config: str | Path,
        data_root: str | Path,
        work_dir: str | Path,
        *,
        max_iters: int | None = None,
        checkpoint_interval: int | None = None,
        batch_size: int | None = None,
        image_scale: int | None = None,
        seed: int = 0,
) -> Config:
    """Load a toy config (``configs/toy``) for a run on the toy data under ``data_root``.

    Args:
        config: the config file.
        data_root: the directory ``tools/make_toy_dataset.py`` wrote (holding ``coco/`` or ``ade/``).
        work_dir: where the run writes its logs and checkpoints.
        max_iters: train this many iterations (the schedule is stretched to fit; the
            evaluation happens at the end).
        checkpoint_interval: save a checkpoint every this many iterations.
        batch_size: training images per iteration.
        image_scale: resize (and crop) to this side instead of the config's 256 px.
        seed: the run's random seed.

    Returns:
        The config, ready for ``Runner.from_cfg``. Its experiment name (and visualizer name)
        is unique, so that several runs in one process keep separate loggers, message hubs
        and visualizers.
    """
    with _environment(ZOO_TOY_DATA=str(Path(data_root).resolve())):
        cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{Path(config).stem}_{os.getpid()}_{next(_run_ids)}_{time.strftime("%H%M%S")}'
    if cfg.get('visualizer'):
        # mm's runtime bases name the visualizer 'visualizer', and mmengine hands a second
        # Runner in the process the first one's instance: its logs would land in the first
        # run's work_dir (or fail once that directory is gone).
        cfg.visualizer.name = cfg.experiment_name
    cfg.randomness = dict(seed=seed)
    if max_iters is not None:
        _rescale_schedule(cfg, max_iters)
    if checkpoint_interval is not None:
        cfg.default_hooks.checkpoint.interval = checkpoint_interval
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size
    if image_scale is not None:
        for pipeline in _pipelines(cfg):
            for transform in pipeline:
                if transform['type'] in ('Resize', 'RandomResize'):
                    transform['scale'] = (image_scale, image_scale)
                elif transform['type'] == 'RandomCrop':
                    transform['crop_size'] = (image_scale, image_scale)
        if cfg.model.data_preprocessor.get('size'):
            cfg.model.data_preprocessor.size = (image_scale, image_scale)
    return cfg


def train_toy_detector(workdir: Path) -> str:
    """Train RetinaNet (VAN-B0) on a freshly generated toy COCO set for a few iterations.

    Runs on CPU in well under two minutes: 24 training images, 20 iterations of 2 images,
    then an evaluation on 8 validation images. From scratch and this short, the detector only
    starts to learn (the loss falls; the mAP stays near 0): ``configs/README.md`` gives the
    longer run that reaches a useful mAP.

    Args:
        workdir: an empty directory for the dataset, logs and checkpoints.

    Returns:
        A one-line summary: training loss first -> last, bbox mAP and mAP@0.5, wall time.
    """
    from mmengine.runner import Runner

    import zoo.mm  # noqa: F401  (registers the backbone, applies the compatibility fixes)

    start = time.perf_counter()
    data_root = Path(workdir) / 'toy'
    load_tool('make_toy_dataset').make_coco(data_root, seed=0, num_train=24, num_val=8)
    cfg = load_toy_config(TOY_RETINANET, data_root, Path(workdir) / 'retinanet', max_iters=20,
                          checkpoint_interval=20, batch_size=2)
    runner = Runner.from_cfg(cfg)
    runner.train()  # evaluates at the end
    hub = runner.message_hub
    losses = hub.get_scalar('train/loss').data[0]
    window = max(1, min(5, len(losses) // 4))
    return (f'RetinaNet (VAN-B0) on the toy shapes, {len(losses)} iterations from scratch: loss '
            f'{losses[:window].mean():.3f} -> {losses[-window:].mean():.3f}, bbox mAP '
            f'{hub.get_scalar("val/coco/bbox_mAP").current():.3f} '
            f'(mAP@0.5 {hub.get_scalar("val/coco/bbox_mAP_50").current():.3f}), '
            f'{time.perf_counter() - start:.0f} s')


def load_tool(name: str) -> ModuleType:
    """Import one of the repository's ``tools/*.py`` scripts as a module (they are no package).

    Args:
        name: the script's name without ``.py``, e.g. ``'make_toy_dataset'``.
    """
    spec = importlib.util.spec_from_file_location(f'zoo_tools_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module

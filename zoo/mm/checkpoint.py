"""Whole detectors and segmentors from files: the official dense releases, strictly.

The papers' detection and segmentation weights were saved by mmdet 2.x and mmseg 0.x: the
backbone under ``backbone.<official key>`` (with its per-output norms), the neck and heads
under the names mmdet 3 and mmseg 1 still use. mmengine's ``load_from`` matches keys by name and
only logs what did not match. Here:

- ``load_detector_checkpoint`` loads such a file (or one saved by an mm-3 run) into a built
  model with every tensor accounted for, or raises a ``CheckpointError`` that lists the keys,
  says what the file is and where the configs that fit it are listed;
- ``ZooRunner`` is mmengine's ``Runner`` with that loading for ``load_from`` (``tools/test.py``
  and ``tools/train.py`` use it; a config selects it with ``runner_type = 'ZooRunner'``);
- ``describe_checkpoint`` says what a file is, from its ``meta``;
- ``convert_dense_checkpoint`` writes such a file in the zoo's keys (``tools/convert_checkpoint.py --dense``).

The backbone's keys are converted by ``ZooBackbone`` itself, whichever loader reads the file.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..builder import download_url
from ..checkpoint import CheckpointError, load_checkpoint_file, strip_prefixes, summarise_keys, unwrap_state_dict
from .backbone import ZooBackbone

__all__ = ['ZooRunner', 'describe_checkpoint', 'load_detector_checkpoint', 'load_detector_state',
           'dense_state_dict', 'build_model_from_config', 'convert_dense_checkpoint']

def describe_checkpoint(checkpoint: Any) -> str:
    """What a checkpoint file is, in a few words, from its ``meta`` (mm 2.x/3.x) when it has one."""
    if not isinstance(checkpoint, Mapping):
        return f'a {type(checkpoint).__name__}'
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), Mapping) else {}
    parts = []
    for lib in ('mmdet', 'mmseg', 'mmengine', 'mmcv'):
        version = meta.get(f'{lib}_version')
        if version:
            parts.append(f'{lib} {version}')
            break
    config = meta.get('config')
    if isinstance(config, str):
        model = re.search(r"type\s*=\s*'([A-Za-z0-9_]+)'", config)
        backbone = re.search(r"backbone\s*=\s*dict\(\s*type\s*=\s*'([^']+)'", config)
        if model:
            parts.append(f'a {model.group(1)}' + (f' with a {backbone.group(1)} backbone' if backbone else ''))
    classes = meta.get('CLASSES') or (meta.get('dataset_meta') or {}).get('classes')
    if classes:
        parts.append(f'{len(classes)} classes')
    keys = sorted({k.split('.')[0] for k in _state_dict(checkpoint)})
    parts.append(f'weights under {", ".join(keys)}')
    return 'a checkpoint (' + '; '.join(parts) + ')'


def _state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    try:
        return unwrap_state_dict(checkpoint, key='state_dict' if 'state_dict' in checkpoint else None)
    except CheckpointError:
        return {}


def dense_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """A detector's or segmentor's state dict from a loaded file (wrappers and DDP's ``module.`` removed).

    The neck and head keys of the official releases need no renaming: mmdet 3 / mmseg 1 build
    the recipes' necks and heads (FPN, RPNHead, StandardRoIHead with Shared2FCBBoxHead and
    FCNMaskHead, RetinaHead, UPerHead, FCNHead, mmseg's FPNHead) with the same names and shapes
    as mmdet 2.x / mmseg 0.x (built and compared: tests/data/dense_layouts). The backbone keeps
    its official keys, which ``ZooBackbone`` converts when the state dict is loaded.
    """
    state_dict = unwrap_state_dict(checkpoint, key='state_dict' if 'state_dict' in checkpoint else None)
    return strip_prefixes(state_dict, ('module.',))


def _backbones(model: nn.Module) -> list[ZooBackbone]:
    return [m for m in model.modules() if isinstance(m, ZooBackbone)]


def _where_configs_are(model: nn.Module) -> str:
    families = sorted({b.family for b in _backbones(model)})
    cards = ', '.join(f'model_cards/{f}.md' for f in families) or 'the model cards'
    return f'The released dense files and the configs that load them are listed in {cards} ("Released dense weights").'


def load_detector_checkpoint(model: nn.Module, filename: str | os.PathLike, *,
                             config: str | None = None) -> dict:
    """Load a whole detector or segmentor file into ``model``, every tensor accounted for.

    Args:
        model: the built model (its backbone a ``ZooBackbone`` for official files).
        filename: an official dense release (mmdet 2.x / mmseg 0.x layout) or an mm-3 checkpoint.
        config: the config the model was built from, for the error message.

    Returns:
        The loaded checkpoint, as in the file (its ``meta`` and the rest).

    Raises:
        CheckpointError: the file is unsafe or unreadable, or its keys or shapes do not fit the
            model; the message lists them, says what the file is and where the fitting configs
            are listed.
    """
    checkpoint = load_checkpoint_file(filename)
    load_detector_state(model, checkpoint, source=str(filename), config=config)
    return checkpoint


def load_detector_state(model: nn.Module, checkpoint: Mapping, *, source: str = 'checkpoint',
                        config: str | None = None) -> None:
    """``load_detector_checkpoint`` for a checkpoint already read (``source`` names it in errors)."""
    state_dict = dense_state_dict(checkpoint)
    target = model
    while is_model_wrapper(target) or isinstance(target, BaseTTAModel):  # DDP, test-time augmentation
        target = target.module
    what = f'{source} ({describe_checkpoint(checkpoint)})'
    into = f'the {type(target).__name__}' + (f' of {config}' if config else '')
    try:
        result = target.load_state_dict(state_dict, strict=False)
    except (CheckpointError, RuntimeError) as e:
        raise CheckpointError(f'{what} does not load into {into}:\n  {e}\n  {_where_configs_are(target)}') from None
    missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
    if missing or result.unexpected_keys:
        lines = [f'{what} does not fit {into}:']
        if missing:
            lines.append(f'  missing from the file ({len(missing)}): {summarise_keys(missing)}')
        if result.unexpected_keys:
            lines.append(f'  not in the model ({len(result.unexpected_keys)}): {summarise_keys(result.unexpected_keys)}')
        lines.append(f'  {_where_configs_are(target)}')
        raise CheckpointError('\n'.join(lines))


@RUNNERS.register_module()
class ZooRunner(Runner):
    """mmengine's ``Runner`` whose ``load_from`` loads strictly (``load_detector_checkpoint``).

    Official dense releases load with their backbone converted; a file that does not fit the
    model raises instead of being logged and half-loaded. Resuming is mmengine's own.
    """

    def load_checkpoint(self, filename: str, map_location: str | torch.device = 'cpu', strict: bool = True,
                        revise_keys: list = [(r'^module.', '')]) -> dict:  # noqa: B006 (mmengine's signature)
        path = download_url(filename) if str(filename).startswith(('http://', 'https://')) else filename
        checkpoint = load_checkpoint_file(path)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)  # hooks may edit it, as in mmengine
        load_detector_state(self.model, checkpoint, source=str(filename), config=self.cfg.get('filename'))
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename} (every tensor of the model loaded)')
        return checkpoint


def build_model_from_config(config: str | os.PathLike) -> tuple[nn.Module, Any]:
    """The model of an mm config, without its pretrained weights and with SyncBN as BN (CPU)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from .compat import sync_bn_to_bn
    cfg = Config.fromfile(str(config))
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    sync_bn_to_bn(cfg.model)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model), cfg


def convert_dense_checkpoint(config: str | os.PathLike, src: str | os.PathLike, out: str | os.PathLike,
                             metadata: Mapping[str, str] | None = None) -> nn.Module:
    """Convert an official dense release to an mm-3 checkpoint (``.pth``) or a ``.safetensors`` file.

    The model of ``config`` is built, the file is loaded into it strictly
    (``load_detector_checkpoint``), and its state dict is written in the zoo's keys: the result
    loads with plain ``load_from`` (also without the zoo's runner) or ``load_state_dict``.

    Args:
        config: the config that evaluates the file (see the family's model card).
        src: the official file.
        out: ``*.pth`` for an mmengine checkpoint (the file's classes and palette kept as
            ``meta.dataset_meta``), ``*.safetensors`` for the tensors alone (with string metadata).
        metadata: extra strings for the file's metadata (source name, hash...).

    Returns:
        The model with the file's weights.
    """
    from ..checkpoint import save_safetensors
    model, _ = build_model_from_config(config)
    checkpoint = load_detector_checkpoint(model, src, config=str(config))
    meta = dict(metadata or {}, config=str(config), converted_from=os.path.basename(str(src)))
    out = str(out)
    if out.endswith('.safetensors'):
        save_safetensors(model.state_dict(), out, meta)
        return model
    if not out.endswith('.pth'):
        raise ValueError(f'the output file must end in .pth or .safetensors, got {out!r}')
    # mmdet's init_detector and mmseg's init_model read the classes (and palette) from here.
    old_meta = (checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None) or {}
    dataset_meta = dict(old_meta.get('dataset_meta') or {})
    for old, new in (('CLASSES', 'classes'), ('PALETTE', 'palette')):
        if old_meta.get(old) is not None:
            dataset_meta.setdefault(new, tuple(tuple(c) if isinstance(c, list) else c for c in old_meta[old]))
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    torch.save({'meta': meta, 'state_dict': model.state_dict()}, out)
    return model

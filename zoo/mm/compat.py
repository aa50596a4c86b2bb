"""Compatibility of the OpenMMLab stack with current PyTorch, in one place.

Importing this module (``import zoo.mm`` does) applies the one process-wide fix; the other
fixes are helpers that ``tools/train.py`` and ``tools/test.py`` call on a config.

- Checkpoints (applied on import): mmengine 0.10.7 loads checkpoints (``load_checkpoint``,
  ``resume``, ``load_from``) with a plain ``torch.load``, whose default became
  ``weights_only=True`` in torch 2.6; the files the Runner writes hold a few non-tensor
  objects (message hub history buffers, numpy arrays and scalars) and fail. Turning the
  protection off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) is not acceptable; instead mmengine's
  loader for local files is replaced (through its ``CheckpointLoader.register_scheme``) by
  one that admits exactly those objects while it loads, and they join the zoo's allow-list
  (so ``ZooBackbone``'s ``init_cfg`` accepts Runner checkpoints too). Anything else is still
  refused, and torch's process-wide allow-list is left alone.
- ``sync_bn_to_bn``: configs written for GPUs use ``SyncBN``, which has no CPU kernel.
- ``setup_cpu_distributed``: mmengine's ``pytorch`` launcher and DDP wrapper assume CUDA.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from collections.abc import Iterator, MutableMapping, MutableSequence
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from ..checkpoint import register_safe_globals

__all__ = ['MMENGINE_CHECKPOINT_GLOBALS', 'admitted', 'sync_bn_to_bn', 'setup_cpu_distributed']


def _numpy_core() -> Any:
    return getattr(np, '_core', None) or np.core


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stand-in for ``getattr`` that resolves only ``HistoryBuffer``'s statistics methods.

    A ``HistoryBuffer`` pickles its statistics methods (``min``, ``max``, ``mean``,
    ``current``) by reference, as ``getattr(HistoryBuffer, 'min')``; admitting the real
    ``getattr`` would let any checkpoint read any attribute of any allowed object.
    """
    # mmengine's defaults (registered on first use, so maybe not yet) and any registered since.
    known = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in known and callable(vars(HistoryBuffer).get(name)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'refusing getattr({owner!r}, {name!r}) in a checkpoint')


# Everything a Runner checkpoint pickles besides tensors and plain containers, as listed by
# ``torch.serialization.get_unsafe_globals_in_checkpoint`` on the checkpoints of detection and
# segmentation runs (``save_best`` included), plus the dtype types torch checks on load: the
# message hub's ``HistoryBuffer``s with the references to their statistics methods, the numpy
# arrays inside them and numpy scalars.
# numpy < 2 pickles the same functions under ``numpy.core``, so both spellings are listed
# (a run saved there resumes here).
MMENGINE_CHECKPOINT_GLOBALS: list[Any] = [
    HistoryBuffer,
    (_history_buffer_method, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    # Not globals in the file, but the types of the dtype objects it builds (torch checks them):
    # float64 for the logged values and the eta, int64 for their counts, float32 for mmseg's
    # best mIoU (``save_best``).
    type(np.dtype(np.float64)),
    type(np.dtype(np.int64)),
    type(np.dtype(np.float32)),
    *[(getattr(_numpy_core().multiarray, fn), f'{module}.multiarray.{fn}')
      for fn in ('_reconstruct', 'scalar') for module in ('numpy._core', 'numpy.core')],
]



@contextlib.contextmanager
def admitted(items: list[Any] = MMENGINE_CHECKPOINT_GLOBALS) -> Iterator[None]:
    """Admit ``items`` to torch's ``weights_only`` allow-list for the duration of the block.

    Only the items not admitted already are added (and removed afterwards): torch's own
    ``safe_globals`` context removes on exit everything it was given, even what was there before.

    Args:
        items: the allow-list entries (objects, or ``(object, 'pickled.name')`` pairs).
    """
    present = torch.serialization.get_safe_globals()
    with torch.serialization.safe_globals([g for g in items if g not in present]):
        yield


def _load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's loader for local files, with what Runner checkpoints hold admitted.

    Registered for every local path: ``load_checkpoint``, ``resume`` and ``load_from`` all load
    through it. The allow-list is admitted only while loading, not process-wide, so no other
    ``torch.load`` accepts more than before.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    with admitted():
        return torch.load(filename, map_location=map_location, weights_only=True)


CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)
register_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)  # the zoo's loaders too (ZooBackbone's init_cfg)


def sync_bn_to_bn(cfg: Any) -> int:
    """Replace every ``SyncBN`` norm config by ``BN``, in place.

    Without it a GPU config fails on CPU: ``torch.nn.SyncBatchNorm`` refuses CPU tensors.
    (mmengine's Runner reverts SyncBN by itself when not distributed; a model built directly,
    or a multi-process CPU run, needs this.)

    Args:
        cfg: an mmengine ``Config`` (or any nested dict/list config).

    Returns:
        How many norm configs were changed.
    """
    changed = 0
    if isinstance(cfg, MutableMapping):
        if cfg.get('type') in ('SyncBN', 'MMSyncBN'):
            cfg['type'] = 'BN'
            changed += 1
        for value in cfg.values():
            changed += sync_bn_to_bn(value)
    elif isinstance(cfg, MutableSequence):
        for value in cfg:
            changed += sync_bn_to_bn(value)
    return changed


def setup_cpu_distributed(cfg: Any) -> None:
    """Prepare a config for a multi-process CPU run (``torchrun`` without GPUs), in place.

    Without it mmengine fails three times on CPU: its ``pytorch`` launcher calls
    ``torch.cuda.set_device``, it wraps the model in DDP with ``device_ids=[LOCAL_RANK]``
    (DDP refuses device ids for a CPU module), and ``SyncBN`` (and ``sync_bn``) has no CPU
    kernel. So: the process group is initialised here with gloo (the Runner then skips its
    own initialisation), DDP gets ``device_ids=None``, and SyncBN becomes BN.

    Args:
        cfg: the run's mmengine ``Config``; call it before ``Runner.from_cfg``.
    """
    if not torch_dist.is_initialized():
        timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
        kwargs = {'timeout': datetime.timedelta(seconds=timeout)} if timeout else {}
        torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                      world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg['model_wrapper_cfg'] = wrapper
    cfg['sync_bn'] = None
    sync_bn_to_bn(cfg.get('model', {}))


def close_distributed() -> None:
    """Destroy the default process group, if one is up; a no-op otherwise.

    ``tools/train.py`` and ``tools/test.py`` call it when the run ends (also on error). A
    process that exits with a gloo group still alive can abort during interpreter shutdown,
    after a successful run ("terminate called without an active exception", SIGABRT), when
    gloo's threads release work objects that Python is tearing down (pytorch/pytorch#179291).
    mmengine's Runner does not destroy the group it runs in.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()

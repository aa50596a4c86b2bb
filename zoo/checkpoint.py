"""Safe loading of official checkpoint files.

Official releases are pickles that often carry more than tensors: an argparse ``Namespace``
of training args, a yacs ``CfgNode``, numpy scalars for the best accuracy. Unpickling runs
code, so nothing here ever unpickles without ``weights_only=True``; the harmless objects
that official files contain are admitted by an explicit allow-list, and a file that holds
anything else is refused with the names of the offending objects.

Also here: unwrapping the usual containers (``model``, ``state_dict``, ``model_ema``...),
stripping ``module.``/``backbone.`` prefixes, safetensors, and checking a state dict against
a model with an error that names the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    'CheckpointError', 'load_checkpoint_file', 'load_state_dict', 'unwrap_state_dict',
    'strip_prefixes', 'check_state_dict', 'save_safetensors', 'register_safe_globals',
    'safe_globals', 'rename_keys', 'summarise_keys', 'STATE_DICT_KEYS',
]

# Keys under which official files keep their weights, in the order tried by default.
STATE_DICT_KEYS = ('state_dict', 'model', 'module', 'net', 'params')
EMA_KEYS = ('model_ema', 'state_dict_ema', 'ema')


class CheckpointError(RuntimeError):
    """A checkpoint file could not be used: unsafe, truncated, or for another model."""


class PickledConfig:
    """Stand-in for config objects (yacs ``CfgNode``) that official files pickle.

    yacs need not be installed: the pickled class name is mapped onto this stand-in, which
    builds a plain ``OrderedDict`` (the only dict type ``weights_only`` lets a pickle fill)
    holding the values, and runs no code of the file's choosing.
    """

    def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


def _numpy_globals() -> list[Any]:
    # numpy scalars (e.g. a pickled best top-1) and small arrays are common in training
    # checkpoints; their reconstruction functions build plain data and run no user code.
    core = getattr(np, '_core', None) or np.core
    items: list[Any] = [np.dtype, np.ndarray]
    for mod_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        items.append((core.multiarray.scalar, f'{mod_name}.scalar'))
        items.append((core.multiarray._reconstruct, f'{mod_name}._reconstruct'))
    for dtype_cls in vars(np.dtypes).values():
        if isinstance(dtype_cls, type) and issubclass(dtype_cls, np.dtype):
            items.append(dtype_cls)
    return items


_SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    (PickledConfig, 'yacs.config.CfgNode'),
    (PickledConfig, 'fvcore.common.config.CfgNode'),
    (PickledConfig, 'detectron2.config.config.CfgNode'),
    *_numpy_globals(),
]


def register_safe_globals(items: Iterable[Any]) -> None:
    """Add objects to the allow-list used by every load in the zoo.

    Args:
        items: classes/functions, or ``(object, 'module.qualname')`` pairs mapping a pickled
            name onto a harmless stand-in. Only add what builds plain data.
    """
    _SAFE_GLOBALS.extend(items)


def safe_globals() -> list[Any]:
    """The current allow-list (a copy)."""
    return list(_SAFE_GLOBALS)


def _describe_size(path: Path) -> str:
    try:
        return f'{path.stat().st_size:,} bytes'
    except OSError:
        return 'unreadable size'


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device='cpu')
    except SafetensorError as e:
        raise CheckpointError(
            f'{path} is not a readable safetensors file ({_describe_size(path)}): {e}. '
            'It may be truncated (an interrupted download); download it again.') from e


def _unsafe_names(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) files cannot be scanned; the load error still names one
        return []


def load_checkpoint_file(path: str | os.PathLike, *, map_location: str | torch.device = 'cpu') -> Any:
    """Load a checkpoint file without running pickled code.

    ``.safetensors`` files are read with safetensors; everything else with
    ``torch.load(weights_only=True)`` plus the zoo's allow-list (see ``safe_globals``).

    Args:
        path: the file.
        map_location: where to put the tensors.

    Returns:
        Whatever the file holds (a state dict, or a dict wrapping one).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or pickles objects that are
            not on the allow-list (they are named, and nothing of them is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint file not found: {path}')
    if path.suffix == '.safetensors':
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if 'Unsupported global' in msg or 'not an allowed global' in msg or 'Unsupported operand' in msg:
            names = _unsafe_names(path) or [_first_global(msg)]
            raise CheckpointError(
                f'refusing to load {path}: it pickles objects that are not on the allow-list '
                f'({", ".join(n for n in names if n)}). Unpickling them could run arbitrary code. '
                'If you trust the file and these objects only hold data, add harmless stand-ins with '
                'zoo.checkpoint.register_safe_globals([...]).') from None
        raise CheckpointError(
            f'{path} ({_describe_size(path)}) is not a valid checkpoint: {msg.splitlines()[0]}. '
            'It may be truncated or corrupt; download it again.') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f'{path} ({_describe_size(path)}) could not be read as a PyTorch checkpoint: '
            f'{str(e).splitlines()[0]}. It is probably truncated or corrupt; download it again.') from None


def _first_global(msg: str) -> str:
    for word in msg.replace('`', ' ').split():
        if '.' in word and word[0].isalpha() and not word.startswith(('torch.', 'http')):
            return word.rstrip('.,')
    return ''


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(checkpoint: Any, *, key: str | None = None, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Find the state dict inside an official checkpoint.

    Args:
        checkpoint: what ``load_checkpoint_file`` returned.
        key: the wrapper key to use (e.g. ``'model'``); ``None`` tries the usual ones.
        use_ema: prefer the EMA weights (``model_ema``...) when the file has both.

    Raises:
        CheckpointError: no state dict under the requested/usual keys; the message lists the
            keys the file has.
    """
    if _is_state_dict(checkpoint) and key is None:
        return dict(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'expected a dict in the checkpoint, found {type(checkpoint).__name__}')
    if key is not None:
        candidates: tuple[str, ...] = (key,)
    else:
        candidates = (EMA_KEYS + STATE_DICT_KEYS) if use_ema else (STATE_DICT_KEYS + EMA_KEYS)
    for k in candidates:
        value = checkpoint.get(k)
        if isinstance(value, Mapping) and k not in STATE_DICT_KEYS and not _is_state_dict(value):
            # timm's ModelEmaV2 and friends save {'module': ...} one level further down.
            value = value.get('module', value)
        if _is_state_dict(value):
            return dict(value)
    raise CheckpointError(
        f'no state dict found under {list(candidates)}; the checkpoint has the keys '
        f'{sorted(map(str, checkpoint))[:20]}. Pass key=... to choose one.')


def strip_prefixes(state_dict: Mapping[str, torch.Tensor],
                   prefixes: Iterable[str] = ('module.', 'backbone.')) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP's ``module.``, detectors' ``backbone.``) when every key has one."""
    out = dict(state_dict)
    for prefix in prefixes:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


KeyRule = tuple[str, 'str | Callable[[re.Match[str]], str]']


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[KeyRule]) -> dict[str, torch.Tensor]:
    """Rename every key by applying the ``(pattern, replacement)`` rules in order (``re.sub``).

    Two keys that end up with the same name raise: a rule set that merges keys would lose
    weights silently.
    """
    rules = [(re.compile(pattern), repl) for pattern, repl in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, repl in rules:
            new_key = pattern.sub(repl, new_key)
        if new_key in out:
            raise CheckpointError(f'key renaming maps two checkpoint keys onto {new_key!r} (one of them: {key!r})')
        out[new_key] = value
    return out


def load_state_dict(path: str | os.PathLike, *, key: str | None = None, use_ema: bool = False,
                    prefixes: Iterable[str] = ('module.', 'backbone.')) -> dict[str, torch.Tensor]:
    """Load a file safely and return its (unwrapped, prefix-stripped) state dict.

    Args:
        path: a ``.pth``/``.pth.tar``/``.pt``/``.bin`` pickle or a ``.safetensors`` file.
        key: wrapper key to use, ``None`` for the usual ones.
        use_ema: prefer EMA weights when present.
        prefixes: prefixes to strip when all keys carry them.
    """
    checkpoint = load_checkpoint_file(path)
    return strip_prefixes(unwrap_state_dict(checkpoint, key=key, use_ema=use_ema), prefixes)


def summarise_keys(keys: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` keys, comma-separated, and how many more there are."""
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                     ignore: Callable[[str], bool] | None = None, what: str = 'checkpoint') -> None:
    """Raise a clear error unless ``state_dict`` fits ``model`` key for key and shape for shape.

    Args:
        model: the target model.
        state_dict: the (already converted) weights.
        ignore: keys for which a mismatch is expected (e.g. a classifier being replaced).
        what: how to call the weights in the message (e.g. ``'van_b2.official_in1k'``).
    """
    ignore = ignore or (lambda k: False)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not ignore(k)]
    unexpected = [k for k in state_dict if k not in expected and not ignore(k)]
    mismatched = [
        f'{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
        for k, v in state_dict.items()
        if k in expected and not ignore(k) and tuple(v.shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    lines = [f'the {what} does not fit {type(model).__name__} '
             f'({len(state_dict)} tensors in the file, {len(expected)} in the model):']
    if mismatched:
        lines.append(f'  shape mismatches ({len(mismatched)}): {summarise_keys(mismatched, 4)}')
    if missing:
        lines.append(f'  missing from the file ({len(missing)}): {summarise_keys(missing)}')
    if unexpected:
        lines.append(f'  not in the model ({len(unexpected)}): {summarise_keys(unexpected)}')
    lines.append('  Is the file for another variant or another model? Check the model name and the file.')
    raise CheckpointError('\n'.join(lines))


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> None:
    """Save a state dict as safetensors (contiguous, de-aliased copies)."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata=dict(metadata or {}))

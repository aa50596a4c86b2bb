"""Measure training steps: throughput and peak memory of forward, loss, backward, zeroed grads.

A training step here is what a training loop does per batch apart from the optimiser update
(whose cost depends on the optimiser, not the model): ``zero_grad(set_to_none=True)``, the
forward, the loss, the backward. Two kinds of step:

* ``'classifier'``: the model's logits, cross-entropy against random labels;
* ``'dense'``: a ``features_only`` model (what detectors and segmenters train), with a loss on
  every feature map (the mean of its squares, summed), so that every stage gets a gradient.

Both run optionally under autocast (``bfloat16`` on CPU, ``float16`` or ``bfloat16`` on
CUDA: the code paths AMP takes) and with grad checkpointing. Speed is measured in this
process (:func:`measure_train_step`), peak memory in a fresh one on CPU
(:func:`train_peak_memory`, the same method as :func:`zoo.profiling.peak_memory`) or from
``torch.cuda.max_memory_allocated`` on CUDA.

Any callable model works, so the same functions measure an implementation outside the zoo:
:func:`train_peak_memory` takes ``'package.module:callable'`` for a model built by a function
(e.g. an official repository's model on the ``PYTHONPATH``), as ``peak_memory`` does.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.cpu_memory import release_freed_memory
from zoo.profiling import MemoryResult, SpeedResult, Stat, _can_reset_peak, _create, _num_threads, _status_kib, \
    compile_cache

__all__ = ['STEP_KINDS', 'PRECISIONS', 'dense_loss', 'make_train_step', 'measure_train_step', 'set_grad_checkpointing',
           'train_peak_memory']

STEP_KINDS = ('classifier', 'dense')
PRECISIONS = {'float32': None, 'bfloat16': torch.bfloat16, 'float16': torch.float16}

_RESULT_MARK = 'ZOO_TRAIN_MEMORY_RESULT '


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, choices))}, got {value!r}')
    return value


def dense_loss(features: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Sum over the feature maps of the mean of their squares (in float32), a loss on every map."""
    if isinstance(features, torch.Tensor):
        features = [features]
    return sum(f.float().square().mean() for f in features)


def make_train_step(model: nn.Module | Callable[[torch.Tensor], Any], kind: str, *,
                    precision: str = 'float32',
                    device_type: str = 'cpu') -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """One training step without the optimiser update: zero the grads, forward, loss, backward.

    Args:
        model: the model (a module in train mode, or any callable with ``zero_grad``-able
            parameters reached through ``parameters()`` if it has them).
        kind: ``'classifier'`` (cross-entropy of the logits against the labels) or ``'dense'``
            (the model returns feature maps; :func:`dense_loss`).
        precision: ``'float32'``, or ``'bfloat16'`` / ``'float16'`` to run the forward and
            the loss under ``torch.autocast`` (the backward follows autocast's dtypes).
        device_type: the autocast device type (``'cpu'`` or ``'cuda'``).

    Returns:
        ``step(images, labels)``, returning the detached loss.
    """
    _check_choice('kind', kind, STEP_KINDS)
    dtype = PRECISIONS[_check_choice('precision', precision, tuple(PRECISIONS))]
    params = [p for p in model.parameters() if p.requires_grad] if isinstance(model, nn.Module) else []

    def step(images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for p in params:
            p.grad = None
        autocast = (torch.autocast(device_type, dtype=dtype) if dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            out = model(images)
            if kind == 'classifier':
                if labels is None:
                    raise ValueError("a 'classifier' step needs labels")
                loss = F.cross_entropy(out.float(), labels)
            else:
                loss = dense_loss(out)
        loss.backward()
        return loss.detach()

    return step


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> None:
    """``set_grad_checkpointing`` of a model, or of the model a timm feature wrapper holds."""
    for candidate in (model, getattr(model, 'model', None)):
        if hasattr(candidate, 'set_grad_checkpointing'):
            candidate.set_grad_checkpointing(enable)
            return
    raise TypeError(f'{type(model).__name__} has no set_grad_checkpointing: cannot train it with grad checkpointing')


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure_train_step(model: nn.Module, images: torch.Tensor, *, kind: str, labels: torch.Tensor | None = None,
                       precision: str = 'float32', grad_checkpointing: bool = False, compile: bool = False,
                       warmup: int = 2, repeats: int = 5, threads: int | None = None) -> SpeedResult:
    """Time training steps (:func:`make_train_step`) on one batch.

    Args:
        model: the model, put in train mode here.
        images: the batch (its device is the device measured).
        kind: ``'classifier'`` or ``'dense'``.
        labels: class indices for a ``'classifier'`` step (random ones if None).
        precision: ``'float32'``, ``'bfloat16'`` or ``'float16'`` (autocast).
        grad_checkpointing: call ``model.set_grad_checkpointing(True)`` first.
        compile: step through ``torch.compile(model)``; the first (compiling) step, from an
            empty inductor cache, is timed separately as ``compile_s``.
        warmup: untimed steps first.
        repeats: timed steps, one sample each.
        threads: intra-op threads during the measurement (None: as set).

    Returns:
        Throughput (img/s) and step time (``latency_ms``) samples.
    """
    if repeats < 1:
        raise ValueError('repeats must be >= 1')
    model.train()
    if grad_checkpointing:
        set_grad_checkpointing(model, True)
    if kind == 'classifier' and labels is None:
        generator = torch.Generator().manual_seed(0)
        labels = torch.randint(0, model.num_classes, (images.shape[0],), generator=generator).to(images.device)
    runner: Any = model
    if compile:
        torch.compiler.reset()
        runner = torch.compile(model)
    step = make_train_step(runner, kind, precision=precision, device_type=images.device.type)
    compile_s = None
    times = []
    with compile_cache(compile), _num_threads(threads) as used_threads:
        if compile:
            start = time.perf_counter()
            step(images, labels)
            _sync(images.device)
            compile_s = time.perf_counter() - start
        for _ in range(warmup):
            step(images, labels)
        _sync(images.device)
        for _ in range(repeats):
            start = time.perf_counter()
            step(images, labels)
            _sync(images.device)
            times.append(time.perf_counter() - start)
    if grad_checkpointing:
        set_grad_checkpointing(model, False)
    batch = images.shape[0]
    return SpeedResult(batch, Stat.of([batch / t for t in times]), Stat.of([1e3 * t for t in times]),
                       used_threads, compile, compile_s)


def train_peak_memory(model: str, input_size: Sequence[int], *, kind: str, precision: str = 'float32',
                      grad_checkpointing: bool = False, create_kwargs: dict[str, Any] | None = None,
                      warmup: int = 1, repeats: int = 2, threads: int | None = None,
                      device: str = 'cpu', timeout: float | None = None) -> MemoryResult:
    """Peak memory of a training step, in a fresh process.

    On CPU, as :func:`zoo.profiling.peak_memory`: resident memory just before a step, the
    kernel's peak counter reset, the peak read right after it; the figure is the peak minus
    the memory before (activations kept for the backward, gradients, workspaces), with the
    weights in ``baseline_mb``. On CUDA, ``torch.cuda.max_memory_allocated`` over the step
    minus the allocated memory before it (the caching allocator's own reserve is not counted).

    Args:
        model: a timm model name (built with ``pretrained=False``; ``features_only`` for a
            ``'dense'`` step) or ``'package.module:callable'`` returning the module when
            called with ``create_kwargs`` (sent to the child as JSON; nothing is unpickled).
        input_size: full input shape, e.g. ``(2, 3, 512, 512)``.
        kind: ``'classifier'`` or ``'dense'``.
        precision: ``'float32'``, ``'bfloat16'`` or ``'float16'``.
        grad_checkpointing: enable the model's grad checkpointing first.
        create_kwargs: more model arguments.
        warmup: unmeasured steps first.
        repeats: measured steps, one sample each.
        threads: intra-op threads in the child.
        device: ``'cpu'`` or ``'cuda'``.
        timeout: seconds before the child is killed.
    """
    _check_choice('kind', kind, STEP_KINDS)
    _check_choice('precision', precision, tuple(PRECISIONS))
    job = {'model': model, 'input_size': list(input_size), 'kind': kind, 'precision': precision,
           'grad_checkpointing': grad_checkpointing, 'create_kwargs': create_kwargs or {},
           'warmup': warmup, 'repeats': repeats, 'threads': threads, 'device': device}
    release_freed_memory()  # what this process's own steps freed must not sit beside the child's
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    root = str(Path(__file__).resolve().parents[1])
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    proc = subprocess.run([sys.executable, '-c', 'from zoo.train_profiling import _child; _child()'],
                          input=json.dumps(job).encode(), capture_output=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.decode(errors='replace').splitlines() if ln.startswith(_RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.decode(errors='replace').strip().splitlines()[-15:]
        raise RuntimeError(f'training-memory child failed (exit {proc.returncode}):\n' + '\n'.join(tail))
    out = json.loads(lines[-1][len(_RESULT_MARK):])
    return MemoryResult(Stat.of(out['samples_mb']), out['baseline_mb'], tuple(input_size), out['method'],
                        out['notes'])


def build_for_step(model: str, kind: str, create_kwargs: dict[str, Any]) -> nn.Module:
    """Build a named model (or ``'module:callable'``) for a training step of ``kind``."""
    if ':' in model:
        module_name, attr = model.split(':', 1)
        return getattr(importlib.import_module(module_name), attr)(**create_kwargs)
    if kind == 'dense':
        create_kwargs = dict(create_kwargs, features_only=True)
    return _create(model, **create_kwargs)


@contextlib.contextmanager
def _cuda_peak(device: torch.device) -> Iterator[dict[str, float]]:
    torch.cuda.synchronize(device)
    out = {'before': torch.cuda.memory_allocated(device) / 2 ** 20}
    torch.cuda.reset_peak_memory_stats(device)
    yield out
    torch.cuda.synchronize(device)
    out['peak'] = torch.cuda.max_memory_allocated(device) / 2 ** 20


def _child() -> None:
    job = json.loads(sys.stdin.buffer.read())
    if job['threads'] is not None:
        torch.set_num_threads(job['threads'])
    device = torch.device(job['device'])
    # In place: some models' train() / to() overrides return None (norm_eval wrappers).
    model = build_for_step(job['model'], job['kind'], job['create_kwargs'])
    model.to(device)
    model.train()
    if job['grad_checkpointing']:
        set_grad_checkpointing(model, True)
    images = torch.randn(*job['input_size'], device=device)
    labels = None
    if job['kind'] == 'classifier':
        labels = torch.randint(0, model.num_classes, (images.shape[0],), device=device)
    step = make_train_step(model, job['kind'], precision=job['precision'], device_type=device.type)
    notes: list[str] = []
    cuda = device.type == 'cuda'
    reset = cuda or _can_reset_peak()
    if not reset:
        raise OSError('/proc/self/clear_refs cannot reset the peak counter here: no per-step CPU peak')
    method = 'cuda-max-memory-allocated' if cuda else 'VmHWM-reset'
    samples, baseline = [], None
    for i in range(job['warmup'] + job['repeats']):
        gc.collect()
        for p in model.parameters():
            p.grad = None  # the step sets them to None too: measure from the same state every time
        if cuda:
            with _cuda_peak(device) as mem:
                step(images, labels)
            before, peak = mem['before'], mem['peak']
        else:
            before = _status_kib('VmRSS') / 1024
            Path('/proc/self/clear_refs').write_text('5')
            step(images, labels)
            peak = _status_kib('VmHWM') / 1024
        if i >= job['warmup']:
            baseline = before if baseline is None else baseline
            samples.append(peak - before)
    result = {'samples_mb': samples, 'baseline_mb': baseline, 'method': method, 'notes': notes}
    print(_RESULT_MARK + json.dumps(result), flush=True)

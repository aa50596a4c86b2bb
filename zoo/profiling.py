"""Measure vision backbones: parameters, MACs, speed, peak memory and the kernels that run.

Every function works with any timm model (the zoo's models are registered with timm on
``import zoo``) or, where it takes a module, with any ``nn.Module``. Conventions:

* MACs, not FLOPs: ``count_flops`` reports GMACs (multiply-accumulates = FLOPs / 2), which
  is what papers and fvcore call "FLOPs". Only matrix products, convolutions and attention
  are counted (what ``torch.utils.flop_counter`` has formulas for); normalisation,
  activations and other element-wise work are not.
* Timings are samples: every measured figure is a :class:`Stat` (median, quartiles,
  min/max over repeated runs), never a single number.
* Peak memory is measured in a fresh subprocess (see :func:`peak_memory` for what exactly).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import timm
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    'Stat', 'FlopCount', 'SpeedResult', 'MemoryResult',
    'count_params', 'count_flops', 'measure_speed', 'peak_memory', 'matmul_peak_gflops',
    'achieved_efficiency', 'kernels_used', 'machine_info', 'attention_backend',
    'optional_module',
]

_RESULT_MARK = 'ZOO_PEAK_MEMORY_RESULT '


@dataclass(frozen=True)
class Stat:
    """Summary of repeated measurements: median, quartiles (inclusive method) and range."""

    median: float
    q25: float
    q75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        """Summarise ``samples`` (at least one value)."""
        values = sorted(float(v) for v in samples)
        if not values:
            raise ValueError('no samples to summarise')
        q25, _, q75 = statistics.quantiles(values, n=4, method='inclusive') if len(values) > 1 else values * 3
        return cls(statistics.median(values), q25, q75, values[0], values[-1], len(values))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class FlopCount:
    """MACs of one forward pass (``macs`` = FLOPs / 2) with breakdowns, all in MACs.

    Attributes:
        macs: total multiply-accumulates for the whole input (all of its batch).
        by_op: MACs per aten op (``'convolution'``, ``'addmm'``, ``'bmm'``...).
        by_module: MACs per direct child of the model (``'stages'``, ``'head'``...).
        input_shape: the shape of the input that was counted.
    """

    macs: int
    by_op: dict[str, int]
    by_module: dict[str, int]
    input_shape: tuple[int, ...]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9


@dataclass
class SpeedResult:
    """Timed forward passes of one input.

    Attributes:
        batch_size: images per forward.
        img_per_s: throughput samples, images per second.
        latency_ms: wall time of one forward (of the whole batch), milliseconds.
        threads: intra-op threads used.
        compiled: whether the model ran through ``torch.compile``.
        compile_s: wall time of the first (compiling) call when ``compiled``.
    """

    batch_size: int
    img_per_s: Stat
    latency_ms: Stat
    threads: int
    compiled: bool
    compile_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {'batch_size': self.batch_size, 'img_per_s': self.img_per_s.to_dict(),
                'latency_ms': self.latency_ms.to_dict(), 'threads': self.threads,
                'compiled': self.compiled, 'compile_s': self.compile_s}


@dataclass
class MemoryResult:
    """Peak memory of a forward pass, measured in a fresh process (see :func:`peak_memory`).

    Attributes:
        peak_mb: peak resident memory added by the forward over the resident memory just
            before it, MiB, one sample per measured forward.
        baseline_mb: resident memory just before the first measured forward (interpreter,
            libraries, weights), MiB.
        input_shape: shape of the input.
        method: how the peak was read (``'VmHWM-reset'`` or ``'ru_maxrss'``).
        notes: caveats of the method used.
    """

    peak_mb: Stat
    baseline_mb: float
    input_shape: tuple[int, ...]
    method: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {'peak_mb': self.peak_mb.to_dict(), 'baseline_mb': self.baseline_mb,
                'input_shape': list(self.input_shape), 'method': self.method, 'notes': self.notes}


def optional_module(name: str) -> ModuleType | None:
    """Import ``name`` if it exists, else None; errors raised inside an existing module propagate.

    Args:
        name: dotted module name, e.g. ``'zoo.attention'``.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        # Only "this module (or a parent package) is absent" means optional; a missing
        # dependency inside an existing module is a real error.
        parts = name.split('.')
        if err.name in {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}:
            return None
        raise


@contextmanager
def attention_backend(name: str | None) -> Iterator[None]:
    """Run the block with the zoo's attention backend ``name``; None (or no zoo.attention): as is.

    Raises ``BackendNotSupported`` after the block when one of its attention ops did not run
    on ``name`` (the preference fell back to the op's default).

    Args:
        name: a name from ``zoo.attention.available_backends()``, or None for the default.
    """
    if name is None:
        yield
        return
    attention = optional_module('zoo.attention')
    if attention is None:
        raise RuntimeError(f'attention backend {name!r} requested but zoo.attention is not available')
    # A global setting is a preference: ops the backend cannot run fall back to their default.
    # A measurement under the backend's name must not time the default instead.
    with attention.use_backend(name), attention.record_ops() as calls:
        yield
    fell_back = sorted({op for op, ran in calls if ran != name})
    if fell_back:
        raise attention.BackendNotSupported(
            f"the '{name}' backend does not run {', '.join(fell_back)} here (they fell back to their default)")


def _create(name: str, device: str | torch.device | None = None, **create_kwargs: Any) -> nn.Module:
    create_kwargs.setdefault('pretrained', False)
    if device is None:
        return timm.create_model(name, **create_kwargs)
    with torch.device(device):
        return timm.create_model(name, **create_kwargs)


def count_params(model_or_name: nn.Module | str, *, device: str | torch.device = 'meta',
                 **create_kwargs: Any) -> int:
    """Number of parameters (shared ones once).

    Args:
        model_or_name: a module, or a timm model name to build (``pretrained=False`` unless
            given in ``create_kwargs``).
        device: where to build a named model; ``'meta'`` allocates nothing, so even very
            large models are counted in a fraction of a second.
        **create_kwargs: passed to ``timm.create_model`` when building by name.
    """
    model = _create(model_or_name, device, **create_kwargs) if isinstance(model_or_name, str) else model_or_name
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _countable_attention() -> Iterator[None]:
    # FlopCounterMode has no formula for the fused CPU SDPA kernel (it would count 0), so
    # force the math path, which runs as countable bmm ops; the zoo's 'reference' backend
    # likewise expresses its other attention ops (e.g. windows, routed regions) in plain matmuls.
    with ExitStack() as stack:
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        attention = optional_module('zoo.attention')
        if attention is not None and 'reference' in attention.available_backends():
            stack.enter_context(attention.use_backend('reference'))
        yield


def _example_input(model: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    # Follow the model's device and dtype, so a model built on 'meta' is counted for free.
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device('cpu')
    dtype = param.dtype if param is not None else torch.float32
    return torch.randn(*shape, device=device, dtype=dtype)


def count_flops(model: nn.Module, input_size: Sequence[int] | torch.Tensor) -> FlopCount:
    """Count the MACs of one forward pass (attention included).

    Runs the model once under ``FlopCounterMode`` with SDPA forced to its math backend and,
    when ``zoo.attention`` is there, the zoo's ``'reference'`` attention backend, so that
    attention is counted (2*B*heads*N*N*d MACs for softmax attention).

    Args:
        model: the module; built on the ``meta`` device it is counted without computing.
        input_size: full input shape including the batch, e.g. ``(1, 3, 224, 224)`` (the
            papers' per-image figure needs batch 1), or an input tensor.

    Returns:
        A :class:`FlopCount`; ``.gmacs`` is the papers' "GFLOPs".
    """
    x = input_size if isinstance(input_size, torch.Tensor) else _example_input(model, input_size)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), _countable_attention(), counter:
            model(x)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    by_op = {str(op).removeprefix('aten.'): flops // 2 for op, flops in counts.get('Global', {}).items()}
    # Module keys are dotted paths from the root module's class name: 'ResNet.layer1'.
    by_module = {k.split('.', 1)[1]: sum(v.values()) // 2 for k, v in counts.items()
                 if k != 'Global' and k.count('.') == 1}
    return FlopCount(counter.get_total_flops() // 2, by_op, by_module, tuple(x.shape))


@contextmanager
def compile_cache(compile: bool) -> Iterator[None]:
    """Give a compiled measurement an empty inductor cache, so ``compile_s`` is a cold compile.

    Inductor's on-disk cache outlives the process: without this a re-run times cache hits.
    The temporary cache is removed afterwards; nothing happens when ``compile`` is false.
    """
    if not compile:
        yield
        return
    from torch._inductor.utils import fresh_cache
    with fresh_cache():
        yield


@contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def measure_speed(model: nn.Module | Callable[[torch.Tensor], Any], input: torch.Tensor, *,
                  warmup: int = 3, repeats: int = 10, threads: int | None = None,
                  compile: bool = False) -> SpeedResult:
    """Time forward passes of ``input``: throughput and latency, each as a :class:`Stat`.

    Args:
        model: a module (put in eval mode) or any callable taking the input, e.g. an ONNX
            Runtime session wrapper.
        input: the batch to run; its first dimension is the batch size.
        warmup: untimed calls first (allocator, oneDNN primitive caches, compilation).
        repeats: timed calls, each one sample.
        threads: intra-op threads for torch during the measurement (restored after); None
            keeps the current setting.
        compile: run ``torch.compile(model)`` instead of the eager model; the first call
            (which compiles, from an empty inductor cache) is timed separately as ``compile_s``.
    """
    if repeats < 1:
        raise ValueError('repeats must be >= 1')
    if isinstance(model, nn.Module):
        model.eval()
    if compile:
        if not isinstance(model, nn.Module):
            raise TypeError('compile=True needs an nn.Module')
        # Compiled code is cached per code object and need not guard on settings such as the
        # zoo's attention backend: start from a clean cache so this compiles what is asked.
        torch.compiler.reset()
        model = torch.compile(model)
    compile_s = None
    times = []
    with compile_cache(compile), _num_threads(threads) as used_threads, torch.inference_mode():
        if compile:
            start = time.perf_counter()
            model(input)
            compile_s = time.perf_counter() - start
        for _ in range(warmup):
            model(input)
        for _ in range(repeats):
            start = time.perf_counter()
            model(input)  # CPU ops are synchronous: the call returns when the work is done
            times.append(time.perf_counter() - start)
    batch = input.shape[0]
    return SpeedResult(batch, Stat.of([batch / t for t in times]), Stat.of([1e3 * t for t in times]),
                       used_threads, compile, compile_s)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, threads: int | None = None) -> Stat:
    """This machine's fp32 ``torch.mm`` GFLOP/s on ``size`` x ``size`` matrices.

    A practical peak for :func:`achieved_efficiency`: what the BLAS reaches on a large,
    well-shaped product (2 * size**3 FLOPs per call).

    Args:
        size: matrix side.
        repeats: timed calls (after one warm-up call).
        threads: intra-op threads (None: current setting).
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    samples = []
    with _num_threads(threads):
        torch.mm(a, b, out=out)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            samples.append(2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return Stat.of(samples)


def achieved_efficiency(gmacs: float, img_per_s: float, peak_gflops: float) -> float:
    """Fraction of the matmul peak a model reaches: ``2 * GMACs * img/s / peak GFLOP/s``.

    The peak is practical, not theoretical, and only MACs of products, convolutions and
    attention are counted, so this is a rough "how much of the machine" figure; oneDNN
    convolutions can outrun ``torch.mm``, so values slightly above 1 are possible.

    Args:
        gmacs: GMACs per image (:attr:`FlopCount.gmacs` at batch 1).
        img_per_s: measured throughput.
        peak_gflops: from :func:`matmul_peak_gflops` (its median).
    """
    return 2 * gmacs * img_per_s / peak_gflops


def kernels_used(model: nn.Module | Callable[[torch.Tensor], Any], input: torch.Tensor) -> set[str]:
    """Names of the operators that ran in one forward, e.g. ``'aten::_scaled_dot_product_flash_attention_for_cpu'``.

    Uses ``torch.profiler`` (CPU activity) and keeps namespaced operator events, so custom
    ops (``natten::...``) are listed too. Nothing is timed, so a CI check can assert on the
    result. Outer composite ops (``aten::scaled_dot_product_attention``) appear alongside
    the kernels they dispatched to. An unprofiled forward runs first, so that one-time work
    (position tables and index caches built on first use, e.g. HaloNet's) is not listed: two
    calls on the same model and size give the same set.

    Args:
        model: module or callable to run (a module is put in eval mode).
        input: its input.
    """
    if isinstance(model, nn.Module):
        model.eval()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.inference_mode():
        model(input)
        with torch.profiler.profile(activities=activities) as prof:
            model(input)
    return {e.name for e in prof.events() if '::' in e.name}


def _cpuinfo() -> str | None:
    try:
        return Path('/proc/cpuinfo').read_text()
    except OSError:
        return None


def _cpu_model(cpuinfo: str | None) -> str:
    match = re.search(r'^model name\s*:\s*(.+)$', cpuinfo or '', re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or platform.machine()


# CPU instructions that run bfloat16 matmuls natively; without them oneDNN converts to float32.
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16', 'bf16')  # x86 AVX-512 BF16, x86 AMX, Arm BF16


def _cpu_bf16_flags(cpuinfo: str | None) -> list[str] | None:
    """The bfloat16 instructions a /proc/cpuinfo text lists ([] for none), None where it has no
    flag line (or could not be read)."""
    match = re.search(r'^(?:flags|Features)\s*:\s*(.+)$', cpuinfo or '', re.MULTILINE)
    if match is None:
        return None
    flags = set(match.group(1).split())
    return [f for f in BF16_CPU_FLAGS if f in flags]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the measurements depend on: CPU, threads, memory and library versions."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    cpuinfo = _cpuinfo()
    mem_total = None
    try:
        match = re.search(r'^MemTotal:\s+(\d+) kB', Path('/proc/meminfo').read_text(), re.MULTILINE)
        mem_total = round(int(match.group(1)) / 2 ** 20, 1) if match else None
    except OSError:
        pass
    return {
        'cpu_model': _cpu_model(cpuinfo),
        'cpu_capability': torch.backends.cpu.get_cpu_capability(),
        'cpu_bf16_instructions': _cpu_bf16_flags(cpuinfo),
        'logical_cpus': os.cpu_count(),
        'usable_cpus': affinity,
        'torch_threads': torch.get_num_threads(),
        'memory_gib': mem_total,
        'platform': platform.platform(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'onnx': _version('onnx'),
        'onnxruntime': _version('onnxruntime'),
        'numpy': _version('numpy'),
    }


# --- peak memory (runs in a child process) -------------------------------------------------


def peak_memory(model: str, input_size: Sequence[int], *,
                features_only: bool = True, create_kwargs: dict[str, Any] | None = None,
                warmup: int = 1, repeats: int = 3, threads: int | None = None,
                backend: str | None = None, reparam: bool = False, timeout: float | None = None) -> MemoryResult:
    """Peak memory of a forward pass, measured in a fresh Python process.

    What is measured: the child builds the model, runs ``warmup`` forwards, then for each
    measured forward reads the resident set size (VmRSS) just before it, resets the
    kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5) and reads the peak (VmHWM)
    right after it, under ``torch.inference_mode``. The figure is peak minus before: the
    memory the forward itself needs (activations, outputs, kernel workspaces, allocator
    overhead), not the weights or the runtime, which are already resident (reported as
    ``baseline_mb``). The child sets ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves
    tensors from fresh mappings and returns them on free; otherwise freed heap memory from
    model building is reused and hides part of the forward's need. Only touched pages count
    (RSS), which is what a real forward costs. Where ``clear_refs`` cannot be used the
    child falls back to the process-lifetime peak (``ru_maxrss``) after minus before, which
    under-reports when building the model peaked higher than the forward.

    A fresh process per call keeps measurements from polluting each other (allocator
    caches, high-water marks).

    Args:
        model: a timm model name (built with ``pretrained=False``, ``features_only``, and
            ``create_kwargs``), or ``'package.module:callable'`` returning a module when called
            with ``create_kwargs`` (the job goes to the child as JSON: nothing is unpickled).
        input_size: full input shape, e.g. ``(1, 3, 1024, 1024)``.
        features_only: build a named model as a feature extractor (dense-prediction use).
        create_kwargs: more ``timm.create_model`` arguments for a named model.
        warmup: unmeasured forwards first (one-time library initialisation).
        repeats: measured forwards, one sample each.
        threads: intra-op threads in the child (None: torch's default).
        backend: zoo attention backend to run under (None: the default).
        reparam: fuse the model for inference first (``zoo.layers.fuse_for_inference``).
        timeout: seconds before the child is killed.
    """
    job = {'model': model, 'input_size': tuple(input_size), 'features_only': features_only,
           'create_kwargs': create_kwargs or {}, 'warmup': warmup, 'repeats': repeats,
           'threads': threads, 'backend': backend, 'reparam': reparam}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    # Let the child import this package even when it is not installed.
    root = str(Path(__file__).resolve().parents[1])
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    proc = subprocess.run([sys.executable, '-c', 'from zoo.profiling import _memory_child; _memory_child()'],
                          input=json.dumps(job).encode(), capture_output=True, env=env, timeout=timeout)
    stdout = proc.stdout.decode(errors='replace')
    lines = [ln for ln in stdout.splitlines() if ln.startswith(_RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.decode(errors='replace').strip().splitlines()[-15:]
        raise RuntimeError(f'peak-memory child failed (exit {proc.returncode}):\n' + '\n'.join(tail))
    out = json.loads(lines[-1][len(_RESULT_MARK):])
    return MemoryResult(Stat.of(out['samples_mb']), out['baseline_mb'], tuple(input_size), out['method'],
                        out['notes'])


def _status_kib(field_name: str) -> int:
    match = re.search(rf'^{field_name}:\s+(\d+) kB', Path('/proc/self/status').read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f'{field_name} not in /proc/self/status')
    return int(match.group(1))


def _can_reset_peak() -> bool:
    try:
        Path('/proc/self/clear_refs').write_text('5')
        _status_kib('VmHWM')
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    import resource
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == 'darwin' else maxrss  # bytes on macOS, KiB on Linux


def _memory_child() -> None:
    import gc

    job = json.loads(sys.stdin.buffer.read())
    if job['threads'] is not None:
        torch.set_num_threads(job['threads'])
    if ':' in job['model']:
        module_name, attr = job['model'].split(':', 1)
        model = getattr(importlib.import_module(module_name), attr)(**job['create_kwargs'])
    else:
        model = _create(job['model'], features_only=job['features_only'], **job['create_kwargs'])
    model.eval()
    if job.get('reparam'):
        from zoo.layers import fuse_for_inference
        model = fuse_for_inference(model)
    x = torch.randn(*job['input_size'])
    notes = []
    reset = _can_reset_peak()
    if not reset:
        notes.append('clear_refs unavailable: ru_maxrss after minus before (a lower bound); '
                     'baseline_mb is the peak before the forward')
    samples = []
    baseline = None
    with attention_backend(job['backend']), torch.inference_mode():
        for i in range(job['warmup'] + job['repeats']):
            gc.collect()
            if reset:
                before = _status_kib('VmRSS')
                Path('/proc/self/clear_refs').write_text('5')
            else:
                before = _maxrss_kib()
            out = model(x)
            peak = _status_kib('VmHWM') if reset else _maxrss_kib()
            del out
            if i >= job['warmup']:
                baseline = before if baseline is None else baseline
                samples.append((peak - before) / 1024)
    result = {'samples_mb': samples, 'baseline_mb': baseline / 1024,
              'method': 'VmHWM-reset' if reset else 'ru_maxrss', 'notes': notes}
    print(_RESULT_MARK + json.dumps(result), flush=True)

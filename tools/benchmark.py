"""Benchmark timm / zoo models on the CPU: parameters, GMACs, throughput, latency, peak memory.

Examples:
    python tools/benchmark.py resnet18 davit_tiny --quick
    python tools/benchmark.py --family davit --dense-sizes 512 1024 --json bench.json
    python tools/benchmark.py --all --compile --onnx --json bench.json
    python tools/benchmark.py --family van --train --json bench.json

For each model: parameters and GMACs per image (attention included, see zoo/profiling.py);
throughput (img/s) at --batch-size and latency (ms) at batch 1 with the default attention
and each zoo attention backend that applies (eager, and with --compile also torch.compile),
plus ONNX Runtime with --onnx; achieved efficiency = 2 * GMACs * img/s / this machine's
fp32 matmul GFLOP/s; and with --dense-sizes the peak memory of a features_only forward at each size, each in a fresh
process. A backend "applies" when it runs different operators from the default and the
backends measured before it (compared with the profiler at batch 1); otherwise it is
recorded as ``same_kernels_as`` and not timed again (timm's own models are unaffected by
the zoo's backends).

Every timing is a median with quartiles and range over --repeats runs. With --json, the
results are merged into the file per model (and per backend / mode / size), so runs can be
split across invocations; the file also records the machine and its matmul peak. A --train
run writes each finished (step, precision, checkpointing) entry at once: one cut short keeps
them, and its model's train_load_avg has no ``end``.

JSON layout (a "stat" is {median, q25, q75, min, max, n}):
    schema, machine (zoo.profiling.machine_info), matmul_peak_gflops (stat, latest run),
    runs: [{started, argv, models, machine (--train runs: cpu_model, cpu_bf16_instructions, torch)}],
    models: {NAME: {updated, params_m, gmacs (per image), gmacs_by_op, img_size [H, W],
        efficiency_peak_gflops (the matmul peak its efficiencies use),
        load_avg: {start, end} (os.getloadavg(): whether other work shared the machine),
        backends: {LABEL: {attention_kernels | same_kernels_as | not_supported | error}},
        speed: {LABEL: {eager|compile: {throughput: {batch_size, img_per_s: stat,
            latency_ms: stat, threads, compiled, compile_s}, latency: {... at batch 1},
            efficiency: stat without n}}},
        onnx: {dynamic_axes, notes, max_rel_err, latency, throughput (if the batch is dynamic)},
        dense_memory: {LABEL: {SIZE: {peak_mb: stat, baseline_mb, input_shape, method, notes}}},
        errors: {STAGE: message} (from the model's latest run)}}
LABEL is 'default' (the model as built) or a zoo attention backend name.

With --train the training step is measured instead (zoo/train_profiling.py: zeroed grads,
forward, loss, backward): the classifier with cross-entropy at the pretrained size and
--batch-size, and features_only with a loss on every feature map at each --train-dense
SIZE:BATCH, for every --precision (float32; bfloat16 = autocast) with and without grad
checkpointing; speed in this process (eager, and compiled with --compile), peak memory in a
fresh process (RSS growth on CPU, torch.cuda.max_memory_allocated on CUDA). JSON:
    models: {NAME: {train: {STEP: {PRECISION: {CKPT: {eager | compile: {batch_size,
        img_per_s: stat, latency_ms: stat (one step), threads, compiled, compile_s},
        memory: {peak_mb: stat, baseline_mb, ...},
        measured: {run (the started of its run in runs), commit, load_avg: [1 min before, after]}}}}},
        train_updated, train_commit (git, see code_version), train_load_avg: {start, end} (the latest
        run's), train_machine (the inference run's keep theirs: the top-level machine and matmul
        peak describe the inference figures)}}
An entry measured again is replaced whole (--train-dense-only leaves the classifier's as it is).
STEP is 'classifier@HxW/bB' or 'dense@HxW/bB'; CKPT is 'plain' or 'grad_ckpt'.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402

from zoo.profiling import (Stat, achieved_efficiency, attention_backend, count_flops, count_params,  # noqa: E402
                           kernels_used, machine_info, matmul_peak_gflops, measure_speed, optional_module,
                           peak_memory)
from zoo.cpu_memory import retain_freed_memory  # noqa: E402
from zoo.train_profiling import PRECISIONS, measure_train_step, train_peak_memory  # noqa: E402
from zoo.layers import fuse_for_inference  # noqa: E402

SCHEMA = 'zoo-benchmark/1'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('models', nargs='*', metavar='MODEL', help='timm model names')
    parser.add_argument('--family', help="all models of one zoo family (zoo.registry.list_models(family))")
    parser.add_argument('--all', action='store_true', help="all the zoo's models")
    parser.add_argument('--batch-size', type=int, help='throughput batch (default 32; 2 with --quick)')
    parser.add_argument('--img-size', type=int, nargs='+', metavar='N',
                        help="input size, N or H W (default: the model's pretrained input size)")
    parser.add_argument('--dense-sizes', type=int, nargs='+', default=[], metavar='N',
                        help='peak memory of a features_only forward at NxN, each size in a fresh process')
    parser.add_argument('--backends', nargs='+', metavar='NAME',
                        help="zoo attention backends ('default': the model as built; default: the model as "
                             'built, then every available backend)')
    parser.add_argument('--compile', action='store_true', help='also time torch.compile')
    parser.add_argument('--onnx', action='store_true', help='also time ONNX Runtime (CPU)')
    parser.add_argument('--repeats', type=int, help='timed runs per figure (default 10; 3 with --quick)')
    parser.add_argument('--warmup', type=int, help='untimed runs first (default 2; 1 with --quick)')
    parser.add_argument('--threads', type=int, help='intra-op threads (default: torch default)')
    parser.add_argument('--json', type=Path, metavar='OUT', help='merge the results into this JSON file')
    parser.add_argument('--quick', action='store_true', help='tiny batch and few repeats (smoke tests)')
    parser.add_argument('--reparam', action='store_true',
                        help='fuse each model for inference first (zoo.layers.fuse_for_inference: the '
                             "models' own reparameterize() via timm, then conv + BatchNorm folding); results "
                             'are stored as MODEL[reparam]')
    parser.add_argument('--retain-memory', action='store_true',
                        help='keep freed memory in the process for reuse (zoo.cpu_memory.retain_freed_memory: '
                             'no page faults on every large activation; glibc only); results are stored as '
                             'MODEL[retain-memory]. Peak-memory children are not affected')
    parser.add_argument('--set', nargs='+', default=[], metavar='KEY=VALUE',
                        help='model arguments (Python literals), e.g. channels_last=False; results are '
                             'stored as MODEL[KEY=VALUE]')
    parser.add_argument('--train', action='store_true',
                        help='measure the training step instead of inference (see below)')
    parser.add_argument('--train-dense', nargs='*', default=['512:2', '1024:1'], metavar='SIZE:BATCH',
                        help='features_only training steps at SIZExSIZE with BATCH images (default 512:2 1024:1)')
    parser.add_argument('--precision', nargs='+', default=['float32', 'bfloat16'], choices=list(PRECISIONS),
                        help='training precisions (autocast dtypes; default float32 bfloat16)')
    parser.add_argument('--grad-ckpt', nargs='+', default=['plain', 'grad_ckpt'], choices=['plain', 'grad_ckpt'],
                        help='training without and/or with grad checkpointing (default both)')
    parser.add_argument('--no-train-memory', action='store_true', help='--train: skip the peak-memory children')
    parser.add_argument('--train-dense-only', action='store_true',
                        help='--train: only the --train-dense steps, not the classifier step')
    args = parser.parse_args(argv)
    try:
        args.train_dense = [tuple(int(v) for v in spec.split(':')) for spec in args.train_dense]
        if any(len(spec) != 2 or min(spec) < 1 for spec in args.train_dense):
            raise ValueError
    except ValueError:
        parser.error(f'--train-dense takes SIZE:BATCH pairs of positive ints, got {args.train_dense}')
    try:
        args.model_kwargs = {k: ast.literal_eval(v) for k, v in (kv.split('=', 1) for kv in args.set)}
    except (ValueError, SyntaxError) as err:
        parser.error(f'--set takes KEY=VALUE with Python literal values: {err}')
    if sum([bool(args.models), args.family is not None, args.all]) != 1:
        parser.error('give MODEL names, --family NAME or --all (exactly one)')
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error('--img-size takes N or H W')
    args.batch_size = args.batch_size or (2 if args.quick else 32)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.threads = args.threads or torch.get_num_threads()
    return args


def resolve_models(args: argparse.Namespace) -> list[str]:
    if args.models:
        return args.models
    registry = optional_module('zoo.registry')
    if registry is None:
        sys.exit('--family/--all need zoo.registry, which is not available')
    try:
        return registry.list_models(args.family)
    except ValueError as err:  # unknown family
        sys.exit(str(err))


def resolve_backends(requested: list[str] | None) -> list[str | None]:
    """Attention backends to try, None standing for the model's default.

    Without --backends: the default first, then every available zoo backend (those running
    the same operators as an earlier one are skipped later). Without zoo.attention: [None].
    """
    attention = optional_module('zoo.attention')
    if attention is None:
        if requested:
            print(f'warning: zoo.attention is not available; ignoring --backends {" ".join(requested)}',
                  file=sys.stderr)
        return [None]
    available = list(attention.available_backends())
    if not requested:
        return [None, *available]
    for name in requested:
        if name != 'default' and name not in available:
            print(f'warning: attention backend {name!r} is not available here (available: {available})',
                  file=sys.stderr)
    # 'default' is the model as built (the label the model-card table reads)
    return [None if b == 'default' else b for b in requested if b == 'default' or b in available] or [None]


def code_version(root: Path | None = None) -> str | None:
    """The checkout's commit (short hash, ``+dirty`` with uncommitted changes to tracked files
    other than the figures under model_cards/, which runs merge into), or None outside a git
    checkout: which code a figure measured."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', str(root), 'status', '--porcelain', '--untracked-files=no', '--',
                                '.', ':(exclude)model_cards'],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ('+dirty' if dirty else '') if commit else None


def _load_avg() -> list[float] | None:
    """1/5/15-minute load averages: whether other work shared the machine during a model's run."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on every platform
        return None


def _error(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f'{type(err).__name__}: {lines[0] if lines else ""}'[:500]


def _scaled(stat: Stat, factor: float) -> dict[str, float]:
    return {k: v * factor for k, v in stat.to_dict().items() if k != 'n'}


def bench_model(name: str, args: argparse.Namespace, backends: list[str | None], peak_gflops: float) -> dict[str, Any]:
    """Measure one model; failures of a stage are recorded under 'errors' and the rest goes on."""
    result: dict[str, Any] = {'updated': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'errors': {},
                              'efficiency_peak_gflops': peak_gflops, 'load_avg': {'start': _load_avg()}}
    try:
        model = timm.create_model(name, pretrained=False, **args.model_kwargs).eval()
        if args.reparam:
            model = fuse_for_inference(model)
    except Exception as err:  # one broken model must not stop an --all run
        result['errors']['build'] = _error(err)
        return result
    channels, *default_hw = model.pretrained_cfg['input_size']
    height, width = (args.img_size * 2)[:2] if args.img_size else default_hw
    result.update(params_m=count_params(model) / 1e6, img_size=[height, width])
    try:
        flops = count_flops(model, (1, channels, height, width))
        result.update(gmacs=flops.gmacs, gmacs_by_op={k: v / 1e9 for k, v in flops.by_op.items()})
    except Exception as err:
        result['errors']['flops'] = _error(err)
    one = torch.randn(1, channels, height, width)
    batch = torch.randn(args.batch_size, channels, height, width)
    modes = ['eager', 'compile'] if args.compile else ['eager']
    timing = {'warmup': args.warmup, 'repeats': args.repeats, 'threads': args.threads}

    seen: dict[frozenset[str], str] = {}
    effective: list[str | None] = []
    for backend in backends:
        label = backend or 'default'
        try:
            with attention_backend(backend):
                kernels = frozenset(kernels_used(model, one))
        except Exception as err:
            # A backend that does not implement one of the model's attention ops does not apply.
            unsupported = getattr(optional_module('zoo.attention'), 'BackendNotSupported', ())
            kind = 'not_supported' if isinstance(err, unsupported) else 'error'
            result.setdefault('backends', {})[label] = {kind: _error(err)}
            continue
        if kernels in seen:
            result.setdefault('backends', {})[label] = {'same_kernels_as': seen[kernels]}
            continue
        seen[kernels] = label
        effective.append(backend)
        result.setdefault('backends', {})[label] = {
            'attention_kernels': sorted(k for k in kernels if 'attention' in k or not k.startswith('aten::'))}
        for mode in modes:
            key = f'speed/{label}/{mode}'
            try:
                with attention_backend(backend):
                    thr = measure_speed(model, batch, compile=mode == 'compile', **timing)
                    lat = measure_speed(model, one, compile=mode == 'compile', **timing)
            except Exception as err:
                result['errors'][key] = _error(err)
                continue
            entry = {'throughput': thr.to_dict(), 'latency': lat.to_dict()}
            if 'gmacs' in result:
                entry['efficiency'] = _scaled(thr.img_per_s, achieved_efficiency(result['gmacs'], 1.0, peak_gflops))
            result.setdefault('speed', {}).setdefault(label, {})[mode] = entry

    if args.onnx:
        try:
            result['onnx'] = bench_onnx(model, one, batch, timing)
        except Exception as err:
            result['errors']['onnx'] = _error(err)

    for backend in effective:
        label = backend or 'default'
        for size in args.dense_sizes:
            try:
                mem = peak_memory(name, (1, channels, size, size), features_only=True, threads=args.threads,
                                  create_kwargs=args.model_kwargs,
                                  backend=backend, reparam=args.reparam, warmup=1, repeats=1 if args.quick else 3)
            except Exception as err:
                result['errors'][f'dense_memory/{label}/{size}'] = _error(err)
                continue
            result.setdefault('dense_memory', {}).setdefault(label, {})[str(size)] = mem.to_dict()
    result['load_avg']['end'] = _load_avg()
    return result


def train_steps(name: str, args: argparse.Namespace, channels: int, hw: tuple[int, int]) -> list[tuple[str, str, tuple]]:
    """The training steps to measure: (key, kind, input shape)."""
    steps = [] if args.train_dense_only else [
        (f'classifier@{hw[0]}x{hw[1]}/b{args.batch_size}', 'classifier', (args.batch_size, channels, *hw))]
    for size, batch in args.train_dense:
        steps.append((f'dense@{size}x{size}/b{batch}', 'dense', (batch, channels, size, size)))
    return steps


def bench_train(name: str, args: argparse.Namespace, run_started: str | None = None,
                on_entry: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure the training steps of one model; a failing measurement is recorded and skipped.

    ``on_entry`` is called with the result so far after every (step, precision, checkpointing)
    entry: a large model's run takes hours, and one cut short keeps the entries it finished.

    Each (step, precision, checkpointing) entry records under ``measured`` the run that measured
    it (``run``: its ``started`` in the JSON's ``runs``), the commit and the 1-minute load average
    before and after it: runs that measure a model in parts merge into one entry per model, so the
    model-level ``train_updated`` / ``train_commit`` describe only its latest run.
    """
    commit = code_version()
    result: dict[str, Any] = {'train_updated': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'train_commit': commit,
                              'errors': {},
                              'train_load_avg': {'start': _load_avg()}}
    try:
        classifier = timm.create_model(name, pretrained=False, **args.model_kwargs)
        dense = timm.create_model(name, pretrained=False, features_only=True, **args.model_kwargs)
    except Exception as err:
        result['errors']['build'] = _error(err)
        return result
    channels, *default_hw = classifier.pretrained_cfg['input_size']
    hw = tuple((args.img_size * 2)[:2]) if args.img_size else tuple(default_hw)
    result['params_m'] = count_params(classifier) / 1e6
    timing = {'warmup': args.warmup, 'repeats': args.repeats, 'threads': args.threads}
    modes = ['eager', 'compile'] if args.compile else ['eager']
    for key, kind, shape in train_steps(name, args, channels, hw):
        model = classifier if kind == 'classifier' else dense
        images = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        for precision in args.precision:
            for ckpt in args.grad_ckpt:
                load_start = _load_avg()
                entry: dict[str, Any] = {}
                for mode in modes:
                    try:
                        entry[mode] = measure_train_step(
                            model, images, kind=kind, precision=precision, grad_checkpointing=ckpt == 'grad_ckpt',
                            compile=mode == 'compile', **timing).to_dict()
                    except Exception as err:
                        result['errors'][f'train/{key}/{precision}/{ckpt}/{mode}'] = _error(err)
                if not args.no_train_memory:
                    model.zero_grad(set_to_none=True)  # the child measures a model of its own
                    try:
                        entry['memory'] = train_peak_memory(
                            name, shape, kind=kind, precision=precision, grad_checkpointing=ckpt == 'grad_ckpt',
                            create_kwargs=args.model_kwargs, threads=args.threads,
                            repeats=1 if args.quick else 2).to_dict()
                    except Exception as err:
                        result['errors'][f'train/{key}/{precision}/{ckpt}/memory'] = _error(err)
                entry['measured'] = {'run': run_started, 'commit': commit,
                                     'load_avg': [(load_start or [None])[0], (_load_avg() or [None])[0]]}
                result.setdefault('train', {}).setdefault(key, {}).setdefault(precision, {})[ckpt] = entry
                if on_entry is not None:
                    on_entry(result)
    result['train_load_avg']['end'] = _load_avg()
    return result


def bench_onnx(model: torch.nn.Module, one: torch.Tensor, batch: torch.Tensor, timing: dict[str, int]) -> dict:
    """Export (default attention backend), check and time the model in ONNX Runtime."""
    from zoo.export import OrtModel, check_onnx, export_onnx  # onnx is an optional extra

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'model.onnx'
        info = export_onnx(model, path, input_size=tuple(one.shape))
        runner = OrtModel(path, threads=timing['threads'])
        out = {'dynamic_axes': info.dynamic_axes, 'notes': info.notes,
               'max_rel_err': max(check_onnx(model, path, one, threads=timing['threads']).values()),
               'latency': measure_speed(runner, one, **timing).to_dict()}
        if 'batch' in info.dynamic_axes:
            out['throughput'] = measure_speed(runner, batch, **timing).to_dict()
    return out


def merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``new`` into ``into`` (dicts merge, everything else is replaced)."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: an interrupted run never leaves a truncated file


def _fmt(stat: dict[str, float], digits: int = 1, scale: float = 1.0) -> str:
    return (f'{stat["median"] * scale:.{digits}f} '
            f'[{stat["q25"] * scale:.{digits}f}-{stat["q75"] * scale:.{digits}f}]')


def _table(rows: Iterable[list[str]], header: list[str]) -> str:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ['  '.join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, '-' * len(lines[0]))
    return '\n'.join(lines)


def print_report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    speed_rows, memory_rows = [], []
    for name, res in results.items():
        common = [f'{res["params_m"]:.2f}' if 'params_m' in res else '-',
                  f'{res["gmacs"]:.2f}' if 'gmacs' in res else '-']
        for label, modes in res.get('speed', {}).items():
            for mode, entry in modes.items():
                eff = _fmt(entry['efficiency'], 1, 100) if 'efficiency' in entry else '-'
                speed_rows.append([name, label, *common, mode, _fmt(entry['throughput']['img_per_s']),
                                   _fmt(entry['latency']['latency_ms']), eff])
        if 'onnx' in res:
            onnx = res['onnx']
            thr = _fmt(onnx['throughput']['img_per_s']) if 'throughput' in onnx else 'static batch'
            speed_rows.append([name, 'onnxruntime', *common, f'err {onnx["max_rel_err"]:.0e}', thr,
                               _fmt(onnx['latency']['latency_ms']), '-'])
        for label, sizes in res.get('dense_memory', {}).items():
            for size, mem in sizes.items():
                memory_rows.append([name, label, f'{size}x{size}', _fmt(mem['peak_mb']),
                                    f'{mem["baseline_mb"]:.0f}'])
    if speed_rows:
        print(_table(speed_rows, ['model', 'backend', 'params M', 'GMACs', 'mode',
                                  f'img/s @{args.batch_size} [IQR]', 'latency ms @1 [IQR]', 'efficiency % [IQR]']))
    train_rows = []
    for name, res in results.items():
        for step, precisions in res.get('train', {}).items():
            for precision, ckpts in precisions.items():
                for ckpt, entry in ckpts.items():
                    for mode in ('eager', 'compile'):
                        if mode in entry:
                            mem = _fmt(entry['memory']['peak_mb'], 0) if 'memory' in entry else '-'
                            train_rows.append([name, step, precision, ckpt, mode,
                                               _fmt(entry[mode]['img_per_s'], 2), _fmt(entry[mode]['latency_ms'], 0),
                                               mem])
    if train_rows:
        print(_table(train_rows, ['model', 'training step', 'precision', 'checkpointing', 'mode',
                                  'img/s [IQR]', 'step ms [IQR]', 'peak MiB [IQR]']))
    if memory_rows:
        print()
        print(_table(memory_rows, ['model', 'backend', 'features_only input', 'forward peak MiB [IQR]',
                                   'baseline MiB']))
    for name, res in results.items():
        for stage, message in res.get('errors', {}).items():
            print(f'error: {name} {stage}: {message}', file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = resolve_models(args)
    backends = resolve_backends(args.backends)
    machine = machine_info()
    machine['torch_threads'] = args.threads
    if args.retain_memory and not retain_freed_memory():
        sys.exit('--retain-memory: this C library cannot be tuned (see the warning above)')
    peak = matmul_peak_gflops(repeats=3 if args.quick else 7, threads=args.threads)
    print(f'{machine["cpu_model"]} ({machine["cpu_capability"]}), {args.threads} threads, torch {machine["torch"]}, '
          f'timm {machine["timm"]}; fp32 matmul peak {_fmt(peak.to_dict())} GFLOP/s', flush=True)

    doc: dict[str, Any] = {}
    if args.json is not None and args.json.exists():
        doc = json.loads(args.json.read_text())
        if not args.train and doc.get('machine', {}).get('cpu_model') not in (None, machine['cpu_model']):
            print(f'warning: {args.json} has results from another CPU ({doc["machine"]["cpu_model"]})',
                  file=sys.stderr)
    doc['schema'] = SCHEMA
    if not args.train or 'machine' not in doc:
        doc.update(machine=machine, matmul_peak_gflops=peak.to_dict())
    doc.setdefault('models', {})
    run = {'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'argv': sys.argv[1:] if argv is None else argv,
           'models': names}
    if args.train:  # the inference figures keep the top-level machine; a training run records its own
        run['machine'] = {k: machine.get(k) for k in ('cpu_model', 'cpu_bf16_instructions', 'torch')}
    doc.setdefault('runs', []).append(run)

    results: dict[str, dict[str, Any]] = {}
    tags = [*args.set, *(['reparam'] if args.reparam else []), *(['retain-memory'] if args.retain_memory else [])]
    suffix = f'[{",".join(tags)}]' if tags else ''

    def save(key: str, result: dict[str, Any]) -> None:
        if args.json is None:
            return
        entry = doc['models'].setdefault(key, {})
        entry.pop('errors', None)  # errors describe the latest run of the model only
        for step, precisions in result.get('train', {}).items():
            for precision, ckpts in precisions.items():
                for ckpt in ckpts:  # replaced whole: figures and their provenance go together
                    entry.get('train', {}).get(step, {}).get(precision, {}).pop(ckpt, None)
        merge(entry, copy.deepcopy(result))  # a partial result is still being filled in
        write_json(args.json, doc)

    for name in names:
        key = name + suffix
        print(f'{key} ...', flush=True)
        try:
            if args.train:
                # Each model carries the machine of its training figures: a --train run into a file of
                # inference figures must not relabel those, and training runs may happen elsewhere.
                def save_partial(partial: dict[str, Any], key: str = key) -> None:
                    save(key, dict(partial, train_machine=machine))

                results[key] = dict(bench_train(name, args, run['started'], on_entry=save_partial),
                                    train_machine=machine)
            else:
                results[key] = bench_model(name, args, backends, peak.median)
        except Exception as err:  # record and go on: an --all run must reach the other models
            traceback.print_exc()
            results[key] = {'errors': {'benchmark': _error(err)}}
        save(key, results[key])
    print()
    print_report(results, args)
    return 1 if any(res.get('errors') for res in results.values()) else 0


if __name__ == '__main__':
    sys.exit(main())

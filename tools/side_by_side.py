"""Training cost of our models side by side with the official implementations (issue #22).

For the smallest variant of each family with official code, this builds the official model from
your checkout of the official repository and ours, and measures both in one run, with the same
inputs and threads: the training step (zoo/train_profiling.py: zeroed grads, forward, loss,
backward) of

* the classifier, cross-entropy at 224x224 (``--batch-size``, default 8), and
* the dense model (ours ``features_only``; the official dense backbone where the repository has
  one, else the official classifier's stages), a loss on every feature map, at
  ``--dense-size`` (default 512) with ``--dense-batch`` images (default 2),

as throughput (img/s, this process; ours and official alternate step by step after a warmup,
so that machine load affects both alike; medians over ``--repeats`` rounds) and peak memory of
one step (a fresh process per side and step, ``train_peak_memory``; the official side is
built there through ``'_official_builders:build'``). Stochastic depth and dropout are off on
both sides. Output: a table, and with ``--json`` both figures and the ratios ours/official
(throughput ratio > 1: ours faster; memory ratio < 1: ours smaller), the load averages at the
start and end, and the notes of each build.

Usage::

    python tools/side_by_side.py --official-root ~/official --json model_cards/side_by_side.json
    python tools/side_by_side.py --official-root ~/official --families ravlt van --threads 2
    python tools/side_by_side.py --official-root ~/official --families shvit --profile 15

``--profile N`` also records, per step, the N operators with the most self CPU time in one
profiled step of each side (calls and milliseconds of both): the cards show that table where a
ratio misses the goal, so a reader sees where the time goes.

``--official-root`` holds one checkout per family, in these folders (repository, commit):

==================  ============================================  ==========================================
folder              repository                                    commit (branch)
==================  ============================================  ==========================================
BiFormer            github.com/rayleizhu/BiFormer                 1697bbbeafb8680524898f1dcaac10defd0604be
davit               github.com/dingmyu/davit                      fc79470d99babab23e45e0087790fa23cfd10a02
LITv2               github.com/ziplab/LITv2                       7501c8662991cad6db780b61fac0886b56a76588
VAN-Classification  github.com/Visual-Attention-Network/          e19779b53a1b0828b51ecb4412d577541aee83a7
                    VAN-Classification
CrossFormer-v1      github.com/cheerss/CrossFormer                4fbf7501d6923f2564e8cb6d08a2d0138fc24a16
                                                                  (branch crossformer: CrossFormer v1)
CrossFormer-pp      github.com/cheerss/CrossFormer                795201075f0066e78408882617312084e25aef61
                                                                  (branch main: CrossFormer++)
SHViT               github.com/ysj9909/SHViT                      6a729ccf18e0b941714b529638bd3d9bacebcef0
RALA (or RAVLT)     github.com/qhfan/RALA (RAVLT's code)          a86314f62103c21a1c7e6d826fe4cb0f5586e7b0
iLLaMA              github.com/techmonsterwang/iLLaMA             dfc93b974283cec7a1410122fc6d3a007a8c0039
==================  ============================================  ==========================================

e.g. ``git clone https://github.com/cheerss/CrossFormer CrossFormer-v1 && git -C CrossFormer-v1
checkout 4fbf750``. The official code needs its own pure-Python dependency ``einops``
(BiFormer, RAVLT) importable (e.g. ``PYTHONPATH=dir-with-einops``). The official files import
mmcv 1.x / mmdet 2.x / mmengine helpers that are not part of the models: they get stand-ins
(``tools/_official_builders.py``), and LITv2's CUDA-only deformable conv runs as
``torchvision.ops.deform_conv2d`` with the official layer's parameters. Nothing of the official
code is imported by the zoo.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(TOOLS)]

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _official_builders import FAMILIES, disable_stochastic_layers  # noqa: E402
from zoo.train_profiling import measure_train_step, train_peak_memory  # noqa: E402

_WORKER_MARK = 'SIDE_BY_SIDE_WORKER_RESULT '
LITV2_NOTE = ('LITv2: the official deformable conv is an mmcv-style CUDA extension; the official model runs it '
              'as torchvision.ops.deform_conv2d with the official layer\'s parameters (as ours does).')


def build_ours(name: str, kind: str, kwargs: dict[str, Any] | None = None, norm_eval: bool = False) -> nn.Module:
    """Our model for a step of ``kind`` (``features_only`` for ``'dense'``), stochastic layers off, train mode.

    Args:
        name: timm model name.
        kind: ``'classifier'`` or ``'dense'``.
        kwargs: more model arguments.
        norm_eval: BatchNorms in eval mode (the mm backbone's ``norm_eval=True``), for a
            family whose official dense backbone trains so.
    """
    import timm
    import zoo  # noqa: F401  (registers the families)
    kwargs = dict(kwargs or {})
    if kind == 'dense':
        kwargs['features_only'] = True
    model = disable_stochastic_layers(timm.create_model(name, pretrained=False, **kwargs))
    if norm_eval:  # kept through later train() calls, as the mm backbone's train() does
        batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        module_train = model.train

        def train(mode: bool = True) -> nn.Module:
            module_train(mode)
            for bn in batch_norms:
                bn.train(False)
            return model
        model.train = train
    return model.train()


def _step_specs(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    specs = {'classifier': (args.batch_size, 224), 'dense': (args.dense_batch, args.dense_size)}
    return {k: v for k, v in specs.items() if k in args.steps}


def interleaved_speed(models: dict[str, nn.Module], kind: str, images: torch.Tensor, *, warmup: int,
                      repeats: int, threads: int) -> dict[str, dict[str, Any]]:
    """Throughput of several models on one batch, alternating one timed step each per round.

    Args:
        models: side name -> model (called as ``model(images)``).
        kind: ``'classifier'`` or ``'dense'``.
        images: the batch.
        warmup: untimed steps of each model first.
        repeats: rounds; each round times one step of every model.
        threads: intra-op threads.

    Returns:
        Per side: ``img_per_s`` samples (one per round) and their median.
    """
    labels = None
    if kind == 'classifier':
        num_classes = min(getattr(m, 'num_classes', 1000) for m in models.values())
        labels = torch.randint(0, num_classes, (images.shape[0],), generator=torch.Generator().manual_seed(0))
    samples: dict[str, list[float]] = {side: [] for side in models}
    for side, model in models.items():
        measure_train_step(model, images, kind=kind, labels=labels, warmup=warmup, repeats=1, threads=threads)
    for _ in range(repeats):
        for side, model in models.items():
            result = measure_train_step(model, images, kind=kind, labels=labels, warmup=0, repeats=1,
                                        threads=threads)
            samples[side].append(result.img_per_s.median)
    return {side: {'img_per_s': statistics.median(s), 'samples': s} for side, s in samples.items()}


def operator_profile(models: dict[str, nn.Module], kind: str, images: torch.Tensor, *, threads: int,
                     top: int) -> dict[str, Any]:
    """Self CPU time and calls per operator of one training step of each model (``torch.profiler``).

    Each model takes one unprofiled step first (one-time work stays out). Returns the step's
    total self time per side and the ``top`` operators by their larger self time of the two
    sides, each with both sides' calls and milliseconds: where two implementations spend
    their time differently, these rows say where.
    """
    labels = None
    if kind == 'classifier':
        num_classes = min(getattr(m, 'num_classes', 1000) for m in models.values())
        labels = torch.randint(0, num_classes, (images.shape[0],), generator=torch.Generator().manual_seed(0))
    per_side: dict[str, dict[str, tuple[int, float]]] = {}
    for side, model in models.items():
        measure_train_step(model, images, kind=kind, labels=labels, warmup=1, repeats=1, threads=threads)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            measure_train_step(model, images, kind=kind, labels=labels, warmup=0, repeats=1, threads=threads)
        per_side[side] = {e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()}
    names = set().union(*per_side.values())
    ranked = sorted(names, key=lambda n: -max(ops.get(n, (0, 0.0))[1] for ops in per_side.values()))
    return {'total_self_ms': {side: sum(ms for _, ms in ops.values()) for side, ops in per_side.items()},
            'operators': [{'name': name, **{side: {'calls': ops.get(name, (0, 0.0))[0],
                                                   'self_ms': ops.get(name, (0, 0.0))[1]}
                                            for side, ops in per_side.items()}} for name in ranked[:top]]}


def run_worker(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """Speed of ours and the official model for one family, in this process (one family per process)."""
    import _official_builders
    torch.set_num_threads(args.threads)
    spec = FAMILIES[family]
    out: dict[str, Any] = {'load_start': os.getloadavg()}
    ours = {kind: build_ours(spec.ours, kind, spec.ours_dense_kwargs if kind == 'dense' else None,
                             norm_eval=kind == 'dense' and spec.dense_norm_eval)
            for kind in _step_specs(args)}  # before the official imports (they shadow mm packages)
    for kind, (batch, size) in _step_specs(args).items():
        official = _official_builders.build(family, kind, args.official_root, input_size=size)
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        speed = interleaved_speed({'ours': ours[kind], 'official': official}, kind, images, warmup=args.warmup,
                                  repeats=args.repeats, threads=args.threads)
        out[kind] = {'batch_size': batch, 'input_size': size, 'speed': speed,
                     'params_m': {'ours': sum(p.numel() for p in ours[kind].parameters()) / 1e6,
                                  'official': sum(p.numel() for p in official.parameters()) / 1e6}}
        if args.profile:
            out[kind]['profile'] = operator_profile({'ours': ours[kind], 'official': official}, kind, images,
                                                    threads=args.threads, top=args.profile)
        del official
    out['load_end'] = os.getloadavg()
    return out


def _memory(family: str, kind: str, batch: int, size: int, args: argparse.Namespace) -> dict[str, Any]:
    spec = FAMILIES[family]
    env_path = os.pathsep.join(filter(None, [str(TOOLS), os.environ.get('PYTHONPATH')]))
    os.environ['PYTHONPATH'] = env_path  # the children import side_by_side / _official_builders
    jobs = {'ours': ('side_by_side:build_ours',
                     {'name': spec.ours, 'kind': kind, 'kwargs': spec.ours_dense_kwargs if kind == 'dense' else {},
                      'norm_eval': kind == 'dense' and spec.dense_norm_eval}),
            'official': ('_official_builders:build',
                         {'family': family, 'kind': kind, 'root': str(args.official_root), 'input_size': size})}
    result = {}
    for side, (callable_name, kwargs) in jobs.items():
        try:
            mem = train_peak_memory(callable_name, (batch, 3, size, size), kind=kind, create_kwargs=kwargs,
                                    threads=args.threads, warmup=1, repeats=args.memory_repeats,
                                    timeout=args.timeout)
            result[side] = {'peak_mb': mem.peak_mb.median, 'samples_mb': [mem.peak_mb.min, mem.peak_mb.max],
                            'baseline_mb': mem.baseline_mb, 'method': mem.method}
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            result[side] = {'error': str(err)[-2000:]}
    return result


def run_family(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """Speed (worker process) and memory (one child per side and step) of one family, with the ratios."""
    spec = FAMILIES[family]
    from zoo.registry import family_of
    entry: dict[str, Any] = {'ours': spec.ours, 'card': family_of(spec.ours),
                             'settings': _settings(args), 'official_repo': spec.repo, 'official_commit': spec.commit,
                             'official_branch': spec.branch, 'official_classifier': spec.classifier,
                             'official_dense': spec.dense, 'ours_dense_kwargs': spec.ours_dense_kwargs,
                             'dense_norm_eval': spec.dense_norm_eval}
    cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', family, '--official-root',
           str(args.official_root), '--threads', str(args.threads), '--batch-size', str(args.batch_size),
           '--dense-size', str(args.dense_size), '--dense-batch', str(args.dense_batch), '--repeats',
           str(args.repeats), '--warmup', str(args.warmup), '--profile', str(args.profile), '--steps', *args.steps]
    proc = subprocess.run(cmd, capture_output=True, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.decode(errors='replace').splitlines() if ln.startswith(_WORKER_MARK)]
    if proc.returncode != 0 or not lines:
        entry['error'] = proc.stderr.decode(errors='replace')[-3000:]
        return entry
    worker = json.loads(lines[-1][len(_WORKER_MARK):])
    entry['load_speed'] = {'start': worker['load_start'], 'end': worker['load_end']}
    for kind, (batch, size) in _step_specs(args).items():
        step = worker[kind]
        if not args.no_memory:
            step['memory'] = _memory(family, kind, batch, size, args)
        speed = step['speed']
        step['throughput_ratio'] = speed['ours']['img_per_s'] / speed['official']['img_per_s']
        paired = [a / b for a, b in zip(speed['ours']['samples'], speed['official']['samples'])]
        step['throughput_ratio_paired_median'] = statistics.median(paired)
        mem = step.get('memory', {})
        if 'peak_mb' in mem.get('ours', {}) and 'peak_mb' in mem.get('official', {}):
            step['memory_ratio'] = mem['ours']['peak_mb'] / mem['official']['peak_mb']
        entry[kind] = step
    return entry


def _table(results: dict[str, Any], steps: list[str]) -> str:
    head = ['family', 'step', 'ours img/s', 'official img/s', 'ratio', 'ours MiB', 'official MiB', 'ratio']
    rows = [head]
    for family, entry in results['families'].items():
        if 'error' in entry:
            rows.append([family, 'error', entry['error'].strip().splitlines()[-1][:60], '', '', '', '', ''])
            continue
        for kind in steps:
            step = entry[kind]
            sp, mem = step['speed'], step.get('memory', {})

            def mb(side: str) -> str:
                return f"{mem[side]['peak_mb']:.0f}" if 'peak_mb' in mem.get(side, {}) else '-'
            rows.append([f"{family} ({entry['ours']})", f"{kind} {step['batch_size']}x{step['input_size']}",
                         f"{sp['ours']['img_per_s']:.3g}", f"{sp['official']['img_per_s']:.3g}",
                         f"{step['throughput_ratio']:.2f}x", mb('ours'), mb('official'),
                         f"{step['memory_ratio']:.2f}x" if 'memory_ratio' in step else '-'])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings (also stored per family: a later run of some families may differ)."""
    return {'threads': args.threads, 'classifier': {'batch_size': args.batch_size, 'input_size': 224},
            'dense': {'batch_size': args.dense_batch, 'input_size': args.dense_size},
            'repeats': args.repeats, 'warmup': args.warmup, 'memory_repeats': args.memory_repeats,
            'torch': torch.__version__, 'steps': args.steps}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--official-root', type=Path, required=True,
                        help='folder holding the official checkouts (folder names in this file\'s docstring)')
    parser.add_argument('--families', nargs='+', default=list(FAMILIES), metavar='FAMILY',
                        help=f'families to measure (default all: {", ".join(FAMILIES)})')
    parser.add_argument('--steps', nargs='+', default=['classifier', 'dense'], help='classifier and/or dense')
    parser.add_argument('--batch-size', type=int, default=8, help='classifier batch at 224 (default 8)')
    parser.add_argument('--dense-size', type=int, default=512, help='dense input side (default 512)')
    parser.add_argument('--dense-batch', type=int, default=2, help='dense batch (default 2)')
    parser.add_argument('--threads', type=int, default=1, help='intra-op threads on both sides (default 1)')
    parser.add_argument('--repeats', type=int, default=5, help='interleaved timed rounds (default 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per side first (default 1)')
    parser.add_argument('--memory-repeats', type=int, default=2, help='measured steps per memory child (default 2)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory children')
    parser.add_argument('--timeout', type=float, default=None, help='seconds before a child process is killed')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='also profile one step of each side: the N operators with the most self CPU time')
    parser.add_argument('--json', type=Path, default=None, help='write the results here')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [f for f in args.families + ([args.worker] if args.worker else []) if f not in FAMILIES]
    if unknown:
        parser.error(f'unknown families {unknown}; known: {", ".join(FAMILIES)}')
    bad_steps = [s for s in args.steps if s not in ('classifier', 'dense')]
    if bad_steps:
        parser.error(f"--steps takes 'classifier' and/or 'dense', got {bad_steps}")
    for name in ('batch_size', 'dense_size', 'dense_batch', 'threads', 'repeats', 'memory_repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.profile < 0:
        parser.error(f'--profile must be >= 0, got {args.profile}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if not args.official_root.is_dir():
        parser.error(f'--official-root {args.official_root} is not a folder')
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.worker:
        print(_WORKER_MARK + json.dumps(run_worker(args.worker, args)), flush=True)
        return None
    results: dict[str, Any] = {
        'settings': _settings(args),
        'load_start': os.getloadavg(), 'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'runs': [{'argv': list(sys.argv[1:] if argv is None else argv), 'families': list(args.families)}],
        'notes': ['throughput ratio = ours img/s / official img/s (median over interleaved rounds); '
                  'memory ratio = ours peak MiB / official peak MiB (train_peak_memory, fresh process each)',
                  'stochastic depth and dropout off on both sides', LITV2_NOTE],
        'families': {}}
    for family in args.families:
        results['families'][family] = run_family(family, args)
        print(f'{family} done', file=sys.stderr, flush=True)
        if args.json:  # partial results survive an interrupted run
            args.json.write_text(json.dumps(results, indent=1) + '\n')
    results['load_end'] = os.getloadavg()
    results['finished'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + '\n')
    print(_table(results, args.steps))
    print(f"load average (1, 5, 15 min): start {results['load_start']}, end {results['load_end']}")
    return results


if __name__ == '__main__':
    main()

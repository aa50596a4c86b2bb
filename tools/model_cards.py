"""Generate model_cards/README.md (one table of every zoo model) and its plots.

Examples:
    python tools/model_cards.py                 # rewrite model_cards/README.md and plots/
    python tools/model_cards.py --check         # exit 1 if README.md or a card is out of date
    python tools/model_cards.py --no-plots --out /tmp/cards

Nothing in the table is typed by hand except the published top-1, which comes from
model_cards/published.json. Parameter counts come from the registry (exact, built on the meta
device); GMACs, throughput, latency, achieved efficiency and peak memory come from the
benchmark file that ``tools/benchmark.py --json`` writes (``make benchmark``). A model that
has not been benchmarked yet shows dashes and is listed under the table.

The attention backend tables (README.md and a generated section of each family card) come from
model_cards/backends.json, written by ``tools/check_backends.py --json`` (``make check-backends``).
Three more generated sections, in README.md and in each family card between their own markers:
mixed precision (model_cards/mixed_precision.json, ``tools/mixed_precision.py --json``), training
side by side with the official code (model_cards/side_by_side.json, ``tools/side_by_side.py --json``)
and training cost (the ``train`` entries of the benchmark file, ``tools/benchmark.py --train``).
``--check`` compares the cards' generated sections too.

Plots (PNG, with matplotlib): accuracy vs throughput, accuracy vs GMACs, and peak memory of a
``features_only`` forward vs input size for the models with dense-size measurements.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARDS = Path(__file__).resolve().parents[1] / 'model_cards'
PLOTS = ('accuracy_vs_throughput.png', 'accuracy_vs_gmacs.png', 'memory_vs_size.png', 'training_cost.png')
# The training plot's steps: the classifier at its default batch and the dense step at 512x512
TRAIN_PLOT_STEPS = ('classifier', 'dense@512x512')
DASH = '—'
RETAINED = 'retain-memory'  # tools/benchmark.py --retain-memory stores results as MODEL[retain-memory]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--bench', type=Path, default=CARDS / 'benchmarks.json',
                        help='benchmark JSON written by tools/benchmark.py --json')
    parser.add_argument('--published', type=Path, default=CARDS / 'published.json',
                        help='published top-1 per model')
    parser.add_argument('--backends', type=Path, default=CARDS / 'backends.json',
                        help='attention backend results written by tools/check_backends.py --json')
    parser.add_argument('--mixed-precision', type=Path, default=CARDS / 'mixed_precision.json',
                        help='mixed-precision errors written by tools/mixed_precision.py --json')
    parser.add_argument('--side-by-side', type=Path, default=CARDS / 'side_by_side.json',
                        help='training cost against the official code written by tools/side_by_side.py --json')
    parser.add_argument('--out', type=Path, default=CARDS, help='directory for README.md and plots/')
    parser.add_argument('--models', nargs='+', metavar='MODEL', help='only these models (default: all registered)')
    parser.add_argument('--no-plots', action='store_true', help='only the table')
    parser.add_argument('--check', action='store_true',
                        help='do not write; exit 1 if OUT/README.md differs from what would be written')
    return parser.parse_args(argv)


def _median(stat: dict | None) -> float | None:
    return None if not stat else stat.get('median')


def _dig(d: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def collect_rows(models: Sequence[str], bench: dict, published: dict) -> list[dict[str, Any]]:
    """One record per model: registry facts, published accuracy and the benchmark's medians."""
    from zoo.registry import family_of, param_count
    rows = []
    for name in models:
        entry = bench.get('models', {}).get(name, {})
        eager = _dig(entry, 'speed', 'default', 'eager') or {}
        throughput = eager.get('throughput') or {}
        memory = _dig(entry, 'dense_memory', 'default') or {}
        kept_entry = bench.get('models', {}).get(f'{name}[{RETAINED}]', {})
        kept = _dig(kept_entry, 'speed', 'default', 'eager') or {}
        rows.append(dict(
            name=name,
            family=family_of(name),
            params_m=param_count(name) / 1e6,
            gmacs=entry.get('gmacs'),
            img_size=entry.get('img_size'),
            top1=_dig(published, name, 'top1'),
            top1_note=_dig(published, name, 'note'),
            img_per_s=_median(throughput.get('img_per_s')),
            img_per_s_iqr=(throughput.get('img_per_s') or {}),
            batch_size=throughput.get('batch_size'),
            latency_ms=_median(_dig(eager, 'latency', 'latency_ms')),
            efficiency=_median(eager.get('efficiency')),
            memory_mb={int(size): _median(v.get('peak_mb')) for size, v in memory.items()},
            kept_img_per_s=_median(_dig(kept, 'throughput', 'img_per_s')),
            kept_efficiency=_median(kept.get('efficiency')),
            onnx_latency_ms=_median(_dig(entry, 'onnx', 'latency', 'latency_ms')),
            load_1min=[load[0] for load in (_dig(entry, 'load_avg', 'start'), _dig(kept_entry, 'load_avg', 'start'))
                       if load],
            speed=entry.get('speed', {}),
            backends=entry.get('backends', {}),
            train_fp32=_train_fp32_points(entry),
            benchmarked=bool(throughput),
        ))
    return rows


def _train_fp32_points(entry: dict) -> dict[str, tuple[float, float]]:
    """(peak MiB, img/s) of the float32 step without checkpointing, per TRAIN_PLOT_STEPS prefix."""
    points = {}
    for step, precisions in entry.get('train', {}).items():
        prefix = next((p for p in TRAIN_PLOT_STEPS if step.startswith(p)), None)
        plain = _dig(precisions, 'float32', 'plain') or {}
        img_per_s, peak = _median(_dig(plain, 'eager', 'img_per_s')), _median(_dig(plain, 'memory', 'peak_mb'))
        if prefix and img_per_s is not None and peak is not None:
            points[prefix] = (peak, img_per_s)
    return points


def _backend_rows(rows: list[dict]) -> list[str]:
    """Table lines for the models measured with more than the default eager run."""
    lines = []
    for r in rows:
        runs = [(label, mode) for label, modes in r['speed'].items() for mode in modes]
        if runs == [('default', 'eager')] or not runs:
            continue
        for label, mode in runs:
            entry = r['speed'][label][mode]
            thr = entry.get('throughput', {})
            kernels = ', '.join(k.removeprefix('aten::')
                                for k in r['backends'].get(label, {}).get('attention_kernels', []))
            lines.append('| ' + ' | '.join([
                f"`{r['name']}`", label, mode, _num(_median(thr.get('img_per_s')), '.1f'),
                _num(_median(_dig(entry, 'latency', 'latency_ms')), '.1f'),
                _percent(_median(entry.get('efficiency')), unit=''),
                _num(thr.get('compile_s'), '.0f') if mode == 'compile' else DASH, kernels or DASH]) + ' |')
        for label, info in r['backends'].items():
            if 'same_kernels_as' in info:
                lines.append(f"| `{r['name']}` | {label} | — | same kernels as {info['same_kernels_as']} | | | | |")
    return lines


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


def _percent(fraction: float | None, unit: str = '%') -> str:
    return DASH if fraction is None else f'{100 * fraction:.1f}{unit}'


def _throughput(row: dict) -> str:
    if row['img_per_s'] is None:
        return DASH
    stat = row['img_per_s_iqr']
    spread = f" ({stat['q25']:.1f}–{stat['q75']:.1f})" if 'q25' in stat and 'q75' in stat else ''
    return f"{row['img_per_s']:.1f}{spread}"


def _top1(row: dict) -> str:
    if row['top1'] is None:
        return DASH + (f" ({row['top1_note']})" if row['top1_note'] else '')
    return f"{row['top1']:.1f}" + (f" ({row['top1_note']})" if row['top1_note'] else '')


BACKENDS_BEGIN = '<!-- backends: generated by tools/model_cards.py from backends.json (tools/check_backends.py) -->'
BACKENDS_END = '<!-- /backends -->'


def _short_reason(reason: str | None) -> str:
    """The first clause of a reason: "needs xFormers, which is not installed: pip ..." -> "needs xFormers"."""
    if re.search(r'has no \w+ path', reason or ''):
        return 'no path'
    # The row names the backend already: "the 'natten' backend cannot ..." -> "cannot ...".
    reason = re.sub(r"^(the )?'\w+' (backend )?", '', reason or '')
    return re.split(r', which| \(|: |; ', reason)[0]


def _machine_line(doc: dict) -> str:
    machine = doc.get('machine', {})
    where = machine.get('cuda_device') or f"{machine.get('device', '?')}, no CUDA device"
    packages = ', '.join(f'{p} {machine[p]}' for p in ('natten', 'xformers', 'triton') if machine.get(p))
    tol = doc.get('tolerances', {})
    op_tol = ', '.join(f'{d} {t:g}' for d, t in tol.get('op_max_rel', {}).items())
    return (f"Checked on {where}: torch {machine.get('torch', '?')}" + (f', {packages}' if packages else '')
            + (', Triton in its CPU interpreter' if machine.get('triton_interpret') else '')
            + f'. Error = max |x - ref| / max |ref|; tolerances per dtype {op_tol or DASH}, '
            + f"whole models {tol.get('model_max_rel', DASH)}.")


def _family_rows(family: str, fam: dict) -> list[str]:
    """Table lines of one family: per model and backend, the ops that ran on it and the error."""
    lines = []
    for model, res in fam.get('models', {}).items():
        if 'error' in res:
            lines.append(f'| `{model}` | {DASH} | failed: {res["error"][:120]} | | | |')
            continue
        if not res.get('default'):
            lines.append(f'| `{model}` | any | no zoo.attention op: no backend setting changes it | | | |')
            continue
        for backend, entry in res['backends'].items():
            ops = [op for op, used in entry.get('ran', {}).items() if backend in used]
            fell = [f"{op} -> {'/'.join(f['to'])} ({_short_reason(f['why'])})"
                    for op, f in entry.get('fell_back', {}).items()]
            if entry['status'] == 'failed':
                status = f"FAILED: {entry.get('reason')}"
            elif ops:
                status = 'ran'
            else:
                status = 'skipped: ' + '; '.join(sorted({_short_reason(f['why'])
                                                        for f in entry.get('fell_back', {}).values()}))
            error = f"{entry['max_rel']:.1e}" if 'max_rel' in entry else DASH
            lines.append(f"| `{model}` | {backend} | {status} | {', '.join(ops) or DASH} | "
                         f"{', '.join(fell) or DASH} | {error} |")
    return lines


def render_family_backends(doc: dict, family: str) -> list[str]:
    """The generated backend section of a family card (between BACKENDS_BEGIN and BACKENDS_END)."""
    fam = doc.get('families', {}).get(family)
    lines = [BACKENDS_BEGIN, '## Attention backends (generated)', '']
    if fam is None:
        return lines + ['Not checked yet: run `make check-backends`.', BACKENDS_END]
    lines += [
        'Each row: the model (random weights, one image) under `zoo.attention.use_backend(BACKEND)`,',
        'the ops that ran on that backend, those that fell back to another (and why), and the largest',
        'difference of its features and logits from the default run. Per pattern and dtype, see',
        '[the model cards](README.md#attention-backends). ' + _machine_line(doc),
        '',
        '| Model | Backend | Status | Ops on this backend | Fell back | Max error vs default |',
        '|---|---|---|---|---|---|', *_family_rows(family, fam), BACKENDS_END]
    return lines


def _pattern_rows(doc: dict) -> list[str]:
    lines = []
    dtypes = doc.get('dtypes', [])
    for op, res in doc.get('ops', {}).items():
        for backend, entry in res['backends'].items():
            if entry['status'] == 'skipped' and 'has no' in (entry['reason'] or ''):
                continue  # no path: said once under the table
            cells = []
            for dtype in dtypes:
                done = [r for r in entry['runs'] if r['dtype'] == dtype and r['status'] != 'skipped' and 'forward' in r]
                if not done:
                    cells.append(DASH)
                    continue
                fwd = max(r['forward']['max_rel'] for r in done)
                grads = [g['max_rel'] for r in done for g in r.get('grads', {}).values()]
                cells.append(f'{fwd:.1e} / ' + (f'{max(grads):.1e}' if grads else DASH))
            notes = []
            if entry['status'] == 'skipped':
                notes.append(f"skipped: {entry['reason']}")
            refused = [r for r in entry['runs'] if r['status'] == 'skipped']
            if refused and entry['status'] != 'skipped':
                samples = sorted({r['sample'] for r in refused})
                notes.append(f"refuses {len(samples)} of {len({r['sample'] for r in entry['runs']})} samples ("
                             + '; '.join(sorted({_short_reason(r['reason']) for r in refused})) + ')')
            backward = sorted({_short_reason(r['backward']) for r in entry['runs'] if r.get('backward')})
            if backward:
                notes.append('backward not checked: ' + '; '.join(backward))
            failed = [r for r in entry['runs'] if r['status'] == 'failed']
            status = ('FAILED: ' + failed[0]['reason'][:100]) if failed else entry['status']
            timed = [r['time_ms'].get('forward_backward') or r['time_ms'].get('forward')
                     for r in entry['runs']
                     if r.get('time_ms') and r['dtype'] == 'float32' and r['status'] != 'skipped']
            time_ms = f'{statistics.median(timed):.2f}' if timed else DASH
            lines.append(f"| {op} | {backend}{' (default)' if backend == res['default'] else ''} | {status} | "
                         + ' | '.join(cells) + f" | {time_ms} | {'; '.join(notes) or DASH} |")
    return lines


def render_backends(doc: dict) -> list[str]:
    """The README's backend section: per pattern x backend x dtype, and per family."""
    if not doc:
        return []
    dtypes = doc.get('dtypes', [])
    no_path = {op: [b for b, e in res['backends'].items()
                    if e['status'] == 'skipped' and 'has no' in (e['reason'] or '')]
               for op, res in doc.get('ops', {}).items()}
    lines = [
        '', '## Attention backends', '',
        'Generated from `model_cards/backends.json`, written by `tools/check_backends.py --json`',
        '(`make check-backends`); rerun it on a CUDA machine to fill the GPU rows. Every pattern is called',
        "with `backend=NAME` on sample inputs (odd sizes, with and without bias) and compared with its",
        "`backend='reference'` run in float32, forward / gradients of every input (q, k, v, bias).",
        _machine_line(doc), '',
        '| Pattern | Backend | Status | ' + ' | '.join(f'{d} fwd / grad' for d in dtypes)
        + ' | fwd+bwd ms (float32, median) | Notes |',
        '|' + '---|' * (5 + len(dtypes)), *_pattern_rows(doc), '',
        'No path (the backend does not compute the pattern): ' + '; '.join(
            f"{op}: {', '.join(names)}" for op, names in no_path.items() if names) + '.',
    ]
    if doc.get('absent_ops'):
        lines += ['', 'Not checked (not in `zoo.attention.list_ops()` when this ran): '
                  + ', '.join(doc['absent_ops']) + '.']
    lines += ['', '### Per family', '',
              'Each family model under `zoo.attention.use_backend(BACKEND)`: the ops that ran on that backend, those',
              'that fell back (to which backend, and why), and the largest difference of its features and logits',
              'from the default run (random weights, one image).', '',
              '| Model | Backend | Status | Ops on this backend | Fell back | Max error vs default |',
              '|---|---|---|---|---|---|']
    for family, fam in doc.get('families', {}).items():
        lines += _family_rows(family, fam)
    return lines


def update_family_card(text: str, section: list[str], begin: str = BACKENDS_BEGIN, end: str = BACKENDS_END) -> str:
    """Replace the generated section between ``begin`` and ``end`` of a hand-written card (appended if absent)."""
    block = '\n'.join(section)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip('\n') + '\n\n' + block + '\n'


def _load(load: list[float] | None) -> str:
    """A load-average triple as '1.20 / 1.05 / 0.98' (1, 5, 15 min)."""
    return ' / '.join(f'{x:.2f}' for x in load) if load else DASH


def _loads(pairs: list[dict | None]) -> str:
    """The range of the 1-minute load averages at the start and end of the given runs."""
    ones = sorted(x[0] for p in pairs if p for x in (p.get('start'), p.get('end')) if x)
    if not ones:
        return DASH
    return f'{ones[0]:.2f}' if ones[0] == ones[-1] else f'{ones[0]:.2f}–{ones[-1]:.2f}'


# --- Mixed precision: model_cards/mixed_precision.json, written by tools/mixed_precision.py ---

MIXED_BEGIN = ('<!-- mixed-precision: generated by tools/model_cards.py from mixed_precision.json '
               '(tools/mixed_precision.py) -->')
MIXED_END = '<!-- /mixed-precision -->'
MIXED_COLUMNS = (('bfloat16', 'autocast'), ('float16', 'autocast'), ('bfloat16', 'cast'), ('float16', 'cast'))
MIXED_HEADER = ('| Model | bf16 autocast (ours / official) | fp16 autocast | bf16 model cast | fp16 model cast '
                '| 512x512 features finite (bf16 / fp16) |')


def _mixed_cell(entry: dict, kind: str) -> str:
    """'ours / official' ('ours / —' without an official value); bold when ours is over the test's bound."""
    ours = entry.get(f'{kind}_err')
    if ours is None:
        return DASH
    official = entry.get(f'official_{kind}_err')
    text = f'{ours:.1e} / {official:.1e}' if official is not None else f'{ours:.1e} / {DASH}'
    over = ours > entry.get(f'{kind}_bound', float('inf')) or not entry.get(f'{kind}_finite', True)
    return f'**{text}**' if over else text


def _finite_cell(res: dict) -> str:
    marks = [res.get(d, {}).get('features_512_finite') for d in ('bfloat16', 'float16')]
    return ' / '.join(DASH if m is None else ('yes' if m else '**no**') for m in marks)


def _mixed_rows(doc: dict, models: Sequence[str]) -> tuple[list[str], list[str]]:
    """Table lines of the measured models, and the names of those not measured."""
    lines, missing = [], []
    for name in models:
        res = doc.get('models', {}).get(name)
        if not res or 'bfloat16' not in res:
            missing.append(name)
            continue
        cells = [_mixed_cell(res.get(dtype, {}), kind) for dtype, kind in MIXED_COLUMNS]
        lines.append(f'| `{name}` | ' + ' | '.join(cells) + f' | {_finite_cell(res)} |')
    return lines, missing


FLOAT16_TINY = 2.0 ** -14  # float16's smallest normal number (torch.finfo(torch.float16).tiny)
FLOAT16_SUBNORMAL = 2.0 ** -24  # the spacing of float16's subnormal numbers


def _mixed_misses(doc: dict, models: Sequence[str]) -> list[str]:
    """One line per model over a bound or not finite, with the likely cause when the logits are tiny."""
    lines = []
    for name in models:
        res = doc.get('models', {}).get(name, {})
        over = [f'{dtype} {kind}' for dtype, kind in MIXED_COLUMNS
                if res.get(dtype, {}).get(f'{kind}_err', 0) > res.get(dtype, {}).get(f'{kind}_bound', float('inf'))
                or not res.get(dtype, {}).get(f'{kind}_finite', True)]
        over += [f'{dtype} 512x512 features not finite' for dtype in ('bfloat16', 'float16')
                 if res.get(dtype, {}).get('features_512_finite') is False]
        if not over:
            continue
        line = f"`{name}` misses the test's bound: {', '.join(over)}."
        absmax = res.get('logits_absmax')
        if absmax is not None and absmax < FLOAT16_TINY and any(o.startswith('float16') for o in over):
            line += (f" Its float32 logits ({res.get('weights', 'these weights')}) peak at {absmax:.1e}, below "
                     f"float16's smallest normal number ({FLOAT16_TINY:.1e}): float16 stores them as subnormals, "
                     f'{FLOAT16_SUBNORMAL:.1e} apart ({100 * FLOAT16_SUBNORMAL / absmax:.1f}% of that peak), so the '
                     'error measures the weights more than the model.')
        lines.append(line)
    return lines


def _mixed_text(doc: dict, models: Sequence[str]) -> list[str]:
    settings = doc.get('settings', {})
    measured = [doc['models'][m] for m in models if m in doc.get('models', {})]
    return [
        f"Error = max|y - y_fp32| / max|y_fp32| of the logits (eval mode, `torch.no_grad()`), ours / the official",
        'implementation on the same checkpoint and input (`tests/data/amp_bounds.json`; — where there is no',
        "official measurement). Autocast: `torch.autocast('cpu', dtype)`; model cast: a copy `.to(dtype)` with an",
        'input of that dtype, no autocast. Input: for variants with a parity checkpoint (`tests/data/parity`,',
        'loaded through the pretrained path) the fixture\'s input, else the seeded initialisation (BatchNorm',
        'statistics from a batch) and `torch.randn(2, *input_size)` seeded 0; features: `features_only` on',
        'one 512x512 image under autocast.',
        'tests/test_mixed_precision.py bounds ours at 1.5x the official error, else 1e-2 (float16) and 5e-2',
        '(bfloat16); **bold**: over that bound, or not finite. '
        'Measured with `python tools/mixed_precision.py [MODEL ...] --json model_cards/mixed_precision.json` '
        f"(torch {settings.get('torch', '?')}, {settings.get('threads', '?')} thread(s)); "
        f"load average (1 min) {_loads([m.get('load_avg') for m in measured])}.",
    ]


def render_family_mixed(doc: dict, models: Sequence[str]) -> list[str]:
    """The generated mixed-precision section of a family card (between MIXED_BEGIN and MIXED_END)."""
    lines = [MIXED_BEGIN, '## Mixed precision', '']
    rows, missing = _mixed_rows(doc, models)
    if not rows:
        return lines + ['Not measured yet: run `python tools/mixed_precision.py --family FAMILY '
                        '--json model_cards/mixed_precision.json`.', MIXED_END]
    lines += [*_mixed_text(doc, models), '', MIXED_HEADER, '|---|---|---|---|---|---|', *rows]
    misses = _mixed_misses(doc, models)
    if misses:
        lines += ['', *misses]
    if missing:
        lines += ['', 'Not measured yet: ' + ', '.join(f'`{m}`' for m in missing) + '.']
    return lines + [MIXED_END]


def render_mixed(doc: dict, models: Sequence[str]) -> list[str]:
    """The README's mixed-precision section: one row per model."""
    if not doc:
        return []
    rows, missing = _mixed_rows(doc, models)
    lines = ['', '## Mixed precision', '', *_mixed_text(doc, models), '', MIXED_HEADER, '|---|---|---|---|---|---|',
             *rows]
    misses = _mixed_misses(doc, models)
    if misses:
        lines += ['', *misses]
    if missing:
        lines += ['', f'Not measured yet ({len(missing)}): ' + ', '.join(f'`{m}`' for m in missing) + '.']
    return lines


# --- Side by side with the official code: model_cards/side_by_side.json (tools/side_by_side.py) ---

SIDE_BEGIN = '<!-- side-by-side: generated by tools/model_cards.py from side_by_side.json (tools/side_by_side.py) -->'
SIDE_END = '<!-- /side-by-side -->'
SIDE_STEPS = ('classifier', 'dense')


def _ratio(value: float | None, miss: bool) -> str:
    """'1.23x', bold when it misses the goal (ours slower, or more memory)."""
    if value is None:
        return DASH
    # three digits where two would hide the miss (1.0001 -> 1.000x, not 1.00x)
    text = f'{value:.3f}x' if miss and f'{value:.2f}' == '1.00' else f'{value:.2f}x'
    return f'**{text}**' if miss else text


def _side_command(doc: dict, family: str) -> str:
    """The command of the run that measured ``family``: its argv if recorded, else rebuilt from the settings."""
    run = next((r for r in reversed(doc.get('runs', [])) if family in r.get('families', [])), {})
    if run.get('argv'):
        return f"`python tools/side_by_side.py {' '.join(run['argv'])}`"
    s = doc.get('settings', {})
    args = ['--official-root OFFICIAL', '--families ' + ' '.join(run.get('families', [family]))]
    for flag, value in (('--batch-size', _dig(s, 'classifier', 'batch_size')),
                        ('--dense-size', _dig(s, 'dense', 'input_size')),
                        ('--dense-batch', _dig(s, 'dense', 'batch_size')), ('--threads', s.get('threads')),
                        ('--repeats', s.get('repeats')), ('--warmup', s.get('warmup')),
                        ('--memory-repeats', s.get('memory_repeats'))):
        if value is not None:
            args.append(f'{flag} {value}')
    return (f"`python tools/side_by_side.py {' '.join(args)} --json model_cards/side_by_side.json` "
            "(rebuilt from the JSON's settings: the run did not record its command line)")


def _side_notes(doc: dict, family: str) -> list[str]:
    """The JSON's notes that apply to ``family``: those not addressed to another family ("LITv2: ...")."""
    names = {f: re.sub(r'\W', '', f).lower() for f in doc.get('families', {})}
    notes = []
    for note in [*doc.get('notes', []), *doc.get('families', {}).get(family, {}).get('notes', [])]:
        head = re.match(r'^([\w+-]+):', note)
        addressed = head and re.sub(r'\W', '', head.group(1)).lower() in names.values()
        if not addressed or re.sub(r'\W', '', head.group(1)).lower() == names.get(family):
            notes.append(note)
    return notes


def _side_step_row(label: str, step: dict) -> str:
    speed, memory = step.get('speed', {}), step.get('memory', {})
    thr, mem = step.get('throughput_ratio'), step.get('memory_ratio')
    return '| ' + ' | '.join([
        f"{label} {step.get('input_size')}x{step.get('input_size')}, batch {step.get('batch_size')}",
        *(_num(v, _speed_fmt(v)) for v in (_dig(speed, 'ours', 'img_per_s'), _dig(speed, 'official', 'img_per_s'))),
        _ratio(thr, thr is not None and thr < 1.0),
        _num(_dig(memory, 'ours', 'peak_mb'), '.0f'), _num(_dig(memory, 'official', 'peak_mb'), '.0f'),
        _ratio(mem, mem is not None and mem > 1.0)]) + ' |'


def _side_entries(doc: dict, family: str) -> list[tuple[str, dict]]:
    """The side-by-side entries shown on the card of ``family``: its own and those naming it as
    their card (CrossFormer++ on the CrossFormer card)."""
    return [(key, fam) for key, fam in doc.get('families', {}).items() if fam.get('card', key) == family]


def _render_side_entry(doc: dict, key: str, fam: dict) -> list[str]:
    s = {**doc.get('settings', {}), **fam.get('settings', {})}  # a later run of some families has its own
    commit = (fam.get('official_commit') or '')[:7]
    lines = [
        f"`{fam.get('ours')}` against the official code ({fam.get('official_repo')} at `{commit}`"
        + (f", branch {fam['official_branch']}" if fam.get('official_branch') else '') + '), one training step',
        '(zeroed grads, forward, loss, backward) of each in the same process, alternating, same inputs:',
        f"the classifier with cross-entropy (official: {fam.get('official_classifier', DASH)}) and the dense model",
        f"with a loss on every feature map (official: {fam.get('official_dense', DASH)}"
        + (f"; ours with {', '.join(f'{k}={v}' for k, v in fam['ours_dense_kwargs'].items())}"
           if fam.get('ours_dense_kwargs') else '') + ').',
        f"{s.get('precision', 'float32')}, {s.get('threads', '?')} thread(s), {s.get('repeats', '?')} rounds after "
        f"{s.get('warmup', '?')} warmup step(s); throughput is the median img/s, peak memory the resident-set growth of one step in a "
        f"fresh process. Ratios are ours / official; **bold** misses the goal (throughput below 1.0x, memory "
        f"above 1.0x). Load average (1, 5, 15 min) {_load(_dig(fam, 'load_speed', 'start'))} at the start, "
        f"{_load(_dig(fam, 'load_speed', 'end'))} at the end.",
        f'Command: {_side_command(doc, key)}.',
        '',
        '| Step | img/s ours | img/s official | Throughput ratio | Peak MiB ours | Peak MiB official | Memory ratio |',
        '|---|---|---|---|---|---|---|',
        *[_side_step_row(step, fam[step]) for step in SIDE_STEPS if step in fam],
    ]
    for step in SIDE_STEPS:
        if step in fam and 'profile' in fam[step] and (fam[step].get('throughput_ratio') or 1.0) < 1.0:
            lines += ['', *_render_side_profile(step, fam[step])]
    notes = _side_notes(doc, key)
    if notes:
        lines += ['', 'Notes:', '', *[f'- {note}' for note in notes]]
    return lines


def _render_side_profile(label: str, step: dict) -> list[str]:
    """The operator profile of a step whose throughput misses the goal (``side_by_side.py --profile``)."""
    prof = step['profile']
    rows = [f"| `{op['name']}` | {_dig(op, 'ours', 'calls')} | {_dig(op, 'official', 'calls')} | "
            f"{_num(_dig(op, 'ours', 'self_ms'), '.1f')} | {_num(_dig(op, 'official', 'self_ms'), '.1f')} |"
            for op in prof.get('operators', [])]
    total = prof.get('total_self_ms', {})
    return [f"Where the time of the {label} step goes: one profiled step of each side (`torch.profiler`, "
            f"self CPU time per operator, the {len(rows)} largest; profiling slows both sides alike):",
            '',
            '| Operator | Calls ours | Calls official | Self ms ours | Self ms official |',
            '|---|---|---|---|---|',
            *rows,
            f"| all operators | | | {_num(total.get('ours'), '.1f')} | {_num(total.get('official'), '.1f')} |"]


def render_family_side_by_side(doc: dict, family: str) -> list[str]:
    """The generated side-by-side section of a family card (between SIDE_BEGIN and SIDE_END)."""
    lines = [SIDE_BEGIN, '## Training side by side with the official code', '']
    entries = _side_entries(doc, family)
    if not entries:
        return lines + ['No entry in `model_cards/side_by_side.json`: there is no official training code to '
                        'measure against.', SIDE_END]
    for i, (key, fam) in enumerate(entries):
        if len(entries) > 1:
            lines += ([''] if i else []) + [f"### `{fam.get('ours')}`", '']
        lines += _render_side_entry(doc, key, fam)
    return lines + [SIDE_END]


def render_side_by_side(doc: dict, families: Sequence[str]) -> list[str]:
    """The README's side-by-side summary: the ratios per family."""
    if not doc:
        return []
    lines = ['', '## Training side by side with the official code', '',
             'Ours / official, one training step each (`tools/side_by_side.py`, `model_cards/side_by_side.json`;',
             "settings, commands and notes on each family card): throughput ratio > 1 is faster, memory ratio < 1",
             'is smaller; **bold** misses the goal.', '',
             '| Family | Ours | Classifier throughput | Classifier memory | Dense throughput | Dense memory |',
             '|---|---|---|---|---|---|']
    absent = []
    for family in families:
        entries = _side_entries(doc, family)
        if not entries:
            absent.append(family)
        for _, fam in entries:
            cells = []
            for step in SIDE_STEPS:
                thr, mem = _dig(fam, step, 'throughput_ratio'), _dig(fam, step, 'memory_ratio')
                cells += [_ratio(thr, thr is not None and thr < 1.0), _ratio(mem, mem is not None and mem > 1.0)]
            lines.append(f"| [{family}]({family}.md) | `{fam.get('ours')}` | " + ' | '.join(cells) + ' |')
    if absent:
        lines += ['', 'No official training code to compare with: ' + ', '.join(absent) + '.']
    return lines


# --- Training cost: the ``train`` entries of model_cards/benchmarks.json (tools/benchmark.py --train) ---

TRAIN_BEGIN = '<!-- training: generated by tools/model_cards.py from benchmarks.json (tools/benchmark.py --train) -->'
TRAIN_END = '<!-- /training -->'
PRECISION_ORDER = ('float32', 'bfloat16', 'float16')
CKPT_ORDER = ('plain', 'grad_ckpt')
NO_BF16_MARK = '†'
OTHER_CPU_MARK = '‡'


def _step_key(step: str) -> tuple:
    """classifier first, then dense steps by input size."""
    kind, _, rest = step.partition('@')
    size = re.match(r'(\d+)', rest)
    return (kind != 'classifier', int(size.group(1)) if size else 0, step)


def _order(key: str, order: Sequence[str]) -> tuple:
    return (order.index(key) if key in order else len(order), key)


def _speed_fmt(value: float | None) -> str:
    """Two decimals, or two significant digits below 0.1 img/s: a large model's 1024x1024 step on
    one CPU thread runs at a few thousandths of an image per second, which '.2f' shows as 0.00."""
    if value is None or value <= 0 or value >= 0.1:
        return '.2f'
    return f'.{1 - math.floor(math.log10(value))}f'


def _stat_cell(stat: dict | None, fmt: str, iqr: bool = True) -> str:
    if not stat or stat.get('median') is None:
        return DASH
    spread = f" [{format(stat['q25'], fmt)}–{format(stat['q75'], fmt)}]" if iqr and 'q25' in stat else ''
    return format(stat['median'], fmt) + spread


def _speed_cell(stat: dict | None) -> str:
    return _stat_cell(stat, _speed_fmt(_median(stat)))


def _train_entries(entry: dict) -> list[tuple[str, str, str, dict]]:
    """(step, precision, checkpointing, measurements), in display order."""
    out = []
    for step in sorted(entry.get('train', {}), key=_step_key):
        for precision in sorted(entry['train'][step], key=lambda p: _order(p, PRECISION_ORDER)):
            for ckpt in sorted(entry['train'][step][precision], key=lambda c: _order(c, CKPT_ORDER)):
                out.append((step, precision, ckpt, entry['train'][step][precision][ckpt]))
    return out


def _train_load(entry: dict) -> dict | None:
    # A model measured for inference too keeps the inference run's load_avg: use the training run's
    return entry.get('train_load_avg') or (None if 'speed' in entry else entry.get('load_avg'))


def _train_command(bench: dict, name: str, run: dict | None = None) -> str | None:
    """The command of ``run`` (default: the latest --train run listing ``name``) for ``name`` alone."""
    if run is None:
        run = next((r for r in reversed(bench.get('runs', []))
                    if '--train' in r.get('argv', []) and name in r.get('models', [])), None)
    if run is None or not run.get('argv'):
        return None
    # The command for this model alone: the run's other models measured the same way (or were
    # cut short), so they would only mislead here.
    names = {*run.get('models', []), *bench.get('models', {})}  # a cut-short run lists fewer models than its argv
    flags = [a for a in run['argv'] if a not in names]
    return 'python tools/benchmark.py ' + ' '.join([name, *flags])


def _train_run(bench: dict, name: str, started: str | None) -> tuple[dict | None, dict]:
    """The --train run that measured ``name``'s entries marked ``started`` and the machine it ran on.

    ``started`` None (entries from before per-entry provenance): no run, the model's latest machine.
    Runs started in the same second (parallel processes, merged) share ``started``: the one that
    measured this model is the one listing it.
    """
    entry = bench['models'][name]
    latest = entry.get('train_machine') or bench.get('machine', {})
    if started is None:
        return None, latest
    same = [r for r in bench.get('runs', []) if r.get('started') == started]
    run = next((r for r in same if name in r.get('models', [])), same[0] if same else {})
    # The model-level machine is its latest run's: without a record of its own, an older run gets
    # only its CPU model and torch from it, not what was read off that CPU.
    return run, run.get('machine') or {k: v for k, v in latest.items() if k in ('cpu_model', 'torch')}


def _train_provenance(bench: dict, name: str) -> list[tuple[str, list[tuple[str, str, str, dict]]]]:
    """A model's training entries grouped by the run that measured them, oldest run first, each
    group with its description: command, machine, load, date and commit."""
    entry = bench['models'][name]
    groups: dict[str | None, list] = {}
    for row in _train_entries(entry):
        groups.setdefault(_dig(row[3], 'measured', 'run'), []).append(row)
    out = []
    for started in sorted(groups, key=lambda k: k or ''):
        rows = groups[started]
        run, machine = _train_run(bench, name, started)
        if run is None:
            command, date, commit = _train_command(bench, name), entry.get('train_updated'), entry.get('train_commit')
            load = _loads([_train_load(entry)])
        else:
            command, date = _train_command(bench, name, run), started
            commit = next((c for *_, e in rows if (c := _dig(e, 'measured', 'commit'))), None)
            ones = [x for *_, e in rows for x in (_dig(e, 'measured', 'load_avg') or []) if x is not None]
            load = _loads([{'start': [min(ones)], 'end': [max(ones)]}]) if ones else 'not recorded'
        bf16 = machine.get('cpu_bf16_instructions')
        cpu = machine.get('cpu_model', '?') + (' (no bfloat16 instructions)' if bf16 == [] else
                                               f" ({', '.join(bf16)})" if bf16 else '')
        text = (f"`{command or 'python tools/benchmark.py ' + name + ' --train'}`; "
                f"{cpu}, torch {machine.get('torch', '?')}; load average (1 min) {load}"
                + (f'; measured {date[:10]}' if date else '') + (f' at commit `{commit}`' if commit else '') + '.')
        out.append((text, rows))
    return out


def render_family_training(bench: dict, models: Sequence[str]) -> list[str]:
    """The generated training-cost section of a family card (between TRAIN_BEGIN and TRAIN_END)."""
    lines = [TRAIN_BEGIN, '## Training cost', '']
    entries = {m: bench.get('models', {}).get(m, {}) for m in models}
    measured = [m for m, e in entries.items() if e.get('train')]
    missing = [m for m in models if m not in measured]
    if not measured:
        return lines + ['Not measured yet: ' + ', '.join(f'`{m}`' for m in models) + ' (run `python tools/benchmark.py '
                        'MODEL --train --json model_cards/benchmarks.json`).', TRAIN_END]
    compiled = any('compile' in e for m in measured for *_, e in _train_entries(entries[m]))
    lines += ['One training step (zeroed grads, forward, loss, backward; `zoo/train_profiling.py`): the classifier',
              'with cross-entropy, or `features_only` with a loss on every feature map, at the size and batch of',
              'the step. Precision bfloat16 is autocast; checkpointing `grad_ckpt` is gradient checkpointing.',
              'img/s is the median [interquartile range] in the measuring process, step ms the median step time,',
              'peak MiB the resident-set growth of one step in a fresh process. Run: the measuring run, listed',
              'below the table with its command, machine, load, date and commit. A CPU without bfloat16',
              'instructions (avx512_bf16, AMX; the run says so where it was recorded) runs bfloat16 matmuls',
              'through float32 conversions, often slower than float32: its bfloat16 speeds say nothing of',
              'GPU AMP, its peak memory does.', '']
    runs = []  # (label, description, model, rows)
    for m in measured:
        for text, rows in _train_provenance(bench, m):
            runs.append((str(len(runs) + 1), text, m, rows))
    header = ['Model', 'Step', 'Precision', 'Checkpointing', 'img/s [IQR]', 'Step ms', 'Peak MiB']
    if compiled:
        header += ['Compiled img/s', 'Compiled / eager', 'Compile (s)']
    lines += ['| ' + ' | '.join([*header, 'Run']) + ' |', '|' + '---|' * (len(header) + 1)]
    label_of = {id(e): label for label, _, _, rows in runs for *_, e in rows}
    for m in measured:
        for step, precision, ckpt, e in _train_entries(entries[m]):
            eager = e.get('eager', {})
            cells = [f'`{m}`', f'`{step}`', precision, ckpt, _speed_cell(eager.get('img_per_s')),
                     _stat_cell(eager.get('latency_ms'), '.0f', iqr=False),
                     _stat_cell(_dig(e, 'memory', 'peak_mb'), '.0f', iqr=False)]
            if compiled:
                comp = e.get('compile', {})
                fast, slow = _median(comp.get('img_per_s')), _median(eager.get('img_per_s'))
                cells += [_speed_cell(comp.get('img_per_s')),
                          f'{fast / slow:.2f}x' if fast and slow else DASH, _num(comp.get('compile_s'), '.0f')]
            lines.append('| ' + ' | '.join([*cells, label_of[id(e)]]) + ' |')
    lines += ['', 'Runs:', '']
    lines += [f'{label}. `{m}`: {text}' for label, text, m, _ in runs]
    cpus = sorted({_train_run(bench, m, _dig(rows[0][3], 'measured', 'run'))[1].get('cpu_model', '?')
                   for _, _, m, rows in runs})
    if len(cpus) > 1:
        lines += ['', f'These runs ran on {len(cpus)} CPU models ({", ".join(cpus)}): read speeds only against rows',
                  'whose runs share a CPU. A compiled / eager ratio is always of one run.']
    if missing:
        lines += ['', 'Not measured yet: ' + ', '.join(f'`{m}`' for m in missing) + '.']
    return lines + [TRAIN_END]


def render_training(bench: dict, models: Sequence[str]) -> list[str]:
    """The README's training-cost table: per measured model and step, img/s and peak MiB per precision."""
    measured = [m for m in models if _dig(bench, 'models', m, 'train')]
    lines = ['', '## Training cost', '']
    if not measured:
        return lines + ['Not measured yet: run `python tools/benchmark.py MODEL --train --json '
                        'model_cards/benchmarks.json`.']
    lines += ['One eager training step per model and step kind (`tools/benchmark.py --train`; details, commands',
              'and load on each family card): img/s (median) and peak MiB (resident-set growth of one step),',
              'plain / with gradient checkpointing; Compiled / eager: the `torch.compile`d float32 plain step\'s',
              'throughput over the eager one\'s in the same run (`--compile`), with the compile time.', '',
              '| Model | Step | float32 img/s | bfloat16 img/s | float32 peak MiB | bfloat16 peak MiB | Compiled / eager |',
              '|---|---|---|---|---|---|---|']
    no_bf16 = False
    # Speeds from different CPU models do not compare, and a row can hold several (a --compile run
    # re-measures the float32 plain step on whatever machine it ran): the CPU that measured most
    # figures is the table's, the other CPUs' speeds carry a mark.
    machine_of = {id(e): _train_run(bench, m, _dig(e, 'measured', 'run'))[1]
                  for m in measured for *_, e in _train_entries(bench['models'][m])}
    cpu_of = {key: machine.get('cpu_model', '?') for key, machine in machine_of.items()}
    counts = Counter(cpu_of.values())
    table_cpu = max(counts, key=lambda cpu: (counts[cpu], cpu))
    other_cpus: set[str] = set()
    for m in measured:
        train = bench['models'][m]['train']
        for step in sorted(train, key=_step_key):
            cells = []
            for what in (('eager', 'img_per_s'), ('memory', 'peak_mb')):
                for precision in ('float32', 'bfloat16'):
                    values = []
                    for c in CKPT_ORDER:
                        e = _dig(train, step, precision, c)
                        median = _median(_dig(e or {}, *what))
                        value = _num(median, _speed_fmt(median) if what[1] == 'img_per_s' else '.0f')
                        # A bfloat16 speed from a CPU without bfloat16 instructions is a float32
                        # emulation's: it cannot be read against the other rows' bfloat16 speeds.
                        if e and precision == 'bfloat16' and what[1] == 'img_per_s' and value != DASH and \
                                not machine_of[id(e)].get('cpu_bf16_instructions'):
                            value, no_bf16 = value + NO_BF16_MARK, True
                        if e and what[1] == 'img_per_s' and value != DASH and cpu_of[id(e)] != table_cpu:
                            value += OTHER_CPU_MARK
                            other_cpus.add(cpu_of[id(e)])
                        values.append(value)
                    cells.append(' / '.join(values))
            e = _dig(train, step, 'float32', 'plain') or {}
            fast, slow = _median(_dig(e, 'compile', 'img_per_s')), _median(_dig(e, 'eager', 'img_per_s'))
            took = _dig(e, 'compile', 'compile_s')
            cells.append((f'{fast / slow:.2f}x' + (f' ({took:.0f} s)' if took is not None else '')) if fast and slow else DASH)
            lines.append(f'| `{m}` | `{step}` | ' + ' | '.join(cells) + ' |')
    if no_bf16:
        lines += ['', f'{NO_BF16_MARK} measured on a CPU without bfloat16 instructions (avx512_bf16, AMX) or not recorded as',
                  'having them (runs from before the record): such a CPU runs bfloat16 matmuls through float32',
                  'conversions, so the speed understates one that has them and says nothing of GPU AMP (each card',
                  'lists its runs\' machines).']
    if other_cpus:
        lines += ['', f'{OTHER_CPU_MARK} measured on ' + ', '.join(sorted(other_cpus)) + f', not on the {table_cpu} that measured',
                  'the other speeds: read it only against speeds from the same CPU (a row can mix them: the',
                  '`--compile` runs re-measured the float32 plain steps; each card lists its runs\' machines).']
    missing = [m for m in models if m not in measured]
    if missing:
        lines += ['', f'Not measured yet ({len(missing)}): ' + ', '.join(f'`{m}`' for m in missing) + '.']
    return lines


def family_sections(family: str, models: Sequence[str], bench: dict, backends: dict, mixed: dict,
                    side: dict) -> list[list[str]]:
    """The generated sections of one family card, for the JSON files that exist (each starts and ends
    with its markers)."""
    sections = []
    if backends:
        sections.append(render_family_backends(backends, family))
    if mixed:
        sections.append(render_family_mixed(mixed, models))
    if side:
        sections.append(render_family_side_by_side(side, family))
    sections.append(render_family_training(bench, models))
    return sections


def render_readme(rows: list[dict], bench: dict, plots: Sequence[str], backends: dict | None = None,
                  mixed: dict | None = None, side: dict | None = None) -> str:
    """The README text; a pure function of its inputs (``--check`` relies on that)."""
    machine = bench.get('machine', {})
    peak = _median(bench.get('matmul_peak_gflops'))
    batch_sizes = sorted({r['batch_size'] for r in rows if r['batch_size']})
    lines = [
        '# Model cards: every zoo model in one table',
        '',
        '<!-- Generated by tools/model_cards.py from the registry, published.json and benchmarks.json;',
        '     do not edit by hand: run `python tools/model_cards.py` (or `make model-cards`). -->',
        '',
        'Params are exact (the registry builds each model on the meta device). GMACs are per image at',
        "the model's default input size, attention included. Throughput is eager fp32 at batch "
        + (', '.join(map(str, batch_sizes)) or DASH) + ' (median, with the',
        'interquartile range), latency at batch 1. Efficiency is achieved GFLOP/s (2 x GMACs x img/s)',
        "over this machine's fp32 matmul peak measured in the same run. Peak memory is the resident-set",
        'growth of one batch-1 `features_only` forward at 1024x1024 in a fresh process.',
        '"Memory kept" is the same eager run with `zoo.cpu_memory.retain_freed_memory()` (benchmark',
        '`--retain-memory`): glibc then reuses freed activation memory instead of mapping fresh pages',
        'for every large tensor, so the figure shows the kernels without the page-fault cost (see',
        '`zoo/cpu_memory.py`). ORT is ONNX Runtime latency at batch 1, same threads.',
        'Top-1 is as published (ImageNet-1k); each family card says where it comes from.',
        '',
    ]
    if machine:
        cpus, usable = machine.get('logical_cpus'), machine.get('usable_cpus', '?')
        pinned = isinstance(cpus, int) and isinstance(usable, int) and usable < cpus
        cpu_text = f'{cpus} CPUs, the latest run pinned to {usable}' if pinned else f'{usable} usable CPUs'
        lines += [
            f"Machine: {machine.get('cpu_model', '?')} ({machine.get('cpu_capability', '?')}), "
            f"{cpu_text}, {machine.get('torch_threads', '?')} torch thread(s); "
            f"torch {machine.get('torch', '?')}, timm {machine.get('timm', '?')}; "
            f"fp32 matmul peak {_num(peak, '.0f')} GFLOP/s.",
            '',
        ]
    loads = sorted(x for r in rows for x in r['load_1min'])
    if loads:
        lines += [f"Load average (1 min) when each model's run started: {loads[0]:.2f}–{loads[-1]:.2f} "
                  f"(median {loads[len(loads) // 2]:.2f}; 1.0 is one busy CPU).", '']
    header = ['Model', 'Family', 'Params (M)', 'GMACs', 'Top-1', 'img/s', 'Latency (ms)', 'Efficiency',
              'img/s, memory kept', 'Efficiency, memory kept', 'ORT latency (ms)', 'Peak MB @1024']
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        cells = [
            f"`{r['name']}`", r['family'], f"{r['params_m']:.2f}", _num(r['gmacs'], '.3f'), _top1(r),
            _throughput(r), _num(r['latency_ms'], '.1f'),
            _percent(r['efficiency']), _num(r['kept_img_per_s'], '.1f'), _percent(r['kept_efficiency']),
            _num(r['onnx_latency_ms'], '.1f'),
            _num(r['memory_mb'].get(1024), '.0f'),
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    missing = [r['name'] for r in rows if not r['benchmarked']]
    if missing:
        lines += ['', f'Not benchmarked yet ({len(missing)}): ' + ', '.join(f'`{m}`' for m in missing) + '.',
                  'Run `python tools/benchmark.py MODEL --dense-sizes 512 1024 --json model_cards/benchmarks.json`.']
    if any((r[key] or 0) > 1 for r in rows for key in ('efficiency', 'kept_efficiency')):
        lines += ['', "Efficiencies above 100%: the peak is `torch.mm`'s (MKL's sgemm), and the models' oneDNN",
                  'convolutions ran faster than that on this CPU.']
    for key, what in (('efficiency', 'Lowest achieved efficiency'), ('kept_efficiency', 'Lowest with memory kept')):
        worst = sorted((r for r in rows if r[key] is not None), key=lambda r: r[key])[:3]
        if worst:
            lines += ['', f'{what}: ' + ', '.join(f"`{r['name']}` {100 * r[key]:.1f}%" for r in worst) + '.']
    backend_lines = _backend_rows(rows)
    if backend_lines:
        lines += ['', '## Attention backends and torch.compile', '',
                  'Eager and `torch.compile`d runs per attention backend, for the models measured that way',
                  '(`tools/benchmark.py --compile`, default allocator); which backends run which ops, and how',
                  'far they are from the reference, is in [Attention backends](#attention-backends). A backend',
                  'that runs the same kernels as an earlier one is not timed again. Compile (s) is the first',
                  "compiled call at batch 32; it is much shorter when inductor's on-disk cache already holds the",
                  "model's kernels (a repeated run).",
                  '',
                  '| Model | Backend | Mode | img/s | Latency (ms) | Efficiency (%) | Compile (s) '
                  '| Attention kernels |',
                  '|---|---|---|---|---|---|---|---|', *backend_lines]
    lines += render_backends(backends or {})
    names = [r['name'] for r in rows]
    lines += render_mixed(mixed or {}, names)
    lines += render_side_by_side(side or {}, sorted({r['family'] for r in rows}))
    lines += render_training(bench, names)
    if plots:
        lines += ['', '## Plots', '']
        lines += [f'![{Path(p).stem.replace("_", " ")}](plots/{p})' for p in plots]
    families = sorted({r['family'] for r in rows})
    lines += ['', '## Family cards', '', ' · '.join(f'[{f}]({f}.md)' for f in families), '']
    return '\n'.join(lines)


def write_plots(rows: list[dict], out_dir: Path) -> list[str]:
    """Write the PNG plots that have data; return their file names."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    families = sorted({r['family'] for r in rows})
    colours = {f: plt.get_cmap('tab10')(i % 10) for i, f in enumerate(families)}
    written = []

    def scatter(xkey: str, xlabel: str, fname: str, log: bool) -> None:
        points = [r for r in rows if r[xkey] is not None and r['top1'] is not None]
        if not points:
            return
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
        for fam in families:
            pts = [r for r in points if r['family'] == fam]
            if pts:
                ax.scatter([r[xkey] for r in pts], [r['top1'] for r in pts], color=colours[fam], label=fam)
                for r in pts:
                    ax.annotate(r['name'], (r[xkey], r['top1']), fontsize=7, xytext=(3, 3),
                                textcoords='offset points')
        if log:
            ax.set_xscale('log')
        ax.set_xlabel(xlabel)
        ax.set_ylabel('ImageNet-1k top-1 (%, published)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / fname)
        plt.close(fig)
        written.append(fname)

    scatter('img_per_s', 'throughput (img/s, this machine, eager fp32)', PLOTS[0], log=True)
    scatter('gmacs', 'GMACs per image', PLOTS[1], log=True)

    dense = [r for r in rows if len(r['memory_mb']) >= 2]
    if dense:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
        for r in dense:
            sizes = sorted(r['memory_mb'])
            ax.plot(sizes, [r['memory_mb'][s] for s in sizes], marker='o', color=colours[r['family']],
                    label=r['name'])
        ax.set_xlabel('input side (px), batch 1, features_only forward')
        ax.set_ylabel('peak memory growth (MB)')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / PLOTS[2])
        plt.close(fig)
        written.append(PLOTS[2])

    trained = [r for r in rows if r['train_fp32']]
    if trained:
        fig, axes = plt.subplots(1, len(TRAIN_PLOT_STEPS), figsize=(12, 5), dpi=110)
        for ax, step in zip(axes, TRAIN_PLOT_STEPS):
            for fam in families:
                pts = [(r['name'], *r['train_fp32'][step]) for r in trained
                       if r['family'] == fam and step in r['train_fp32']]
                if not pts:
                    continue
                ax.scatter([p[1] for p in pts], [p[2] for p in pts], color=colours[fam], label=fam)
                for name, peak, img_per_s in pts:
                    ax.annotate(name, (peak, img_per_s), fontsize=6, xytext=(3, 3), textcoords='offset points')
            ax.set_xscale('log')
            ax.set_yscale('log')
            for axis in (ax.xaxis, ax.yaxis):  # plain numbers on the log axes, no crowded minor labels
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
            ax.set_xlabel('peak memory growth of one step (MiB)')
            ax.set_ylabel('training throughput (img/s, this machine, eager fp32)')
            ax.set_title('classifier, default size (batch 32; 16 for the larger variants)' if step == 'classifier'
                         else 'features_only, 2x512x512')
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / PLOTS[3])
        plt.close(fig)
        written.append(PLOTS[3])
    return written


def planned_plots(rows: list[dict]) -> list[str]:
    """The plots that write_plots would produce for these rows (for --check and --no-plots)."""
    plots = []
    if any(r['img_per_s'] is not None and r['top1'] is not None for r in rows):
        plots.append(PLOTS[0])
    if any(r['gmacs'] is not None and r['top1'] is not None for r in rows):
        plots.append(PLOTS[1])
    if any(len(r['memory_mb']) >= 2 for r in rows):
        plots.append(PLOTS[2])
    if any(r['train_fp32'] for r in rows):
        plots.append(PLOTS[3])
    return plots


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import zoo  # noqa: F401  (registers the families)
    from zoo.registry import list_models

    bench = json.loads(args.bench.read_text()) if args.bench.exists() else {}
    published = json.loads(args.published.read_text())
    models = args.models or list_models()
    unknown = sorted(set(models) - set(list_models()))
    if unknown:
        raise SystemExit(f'not zoo models: {unknown}; see `python -m zoo list`')
    rows = collect_rows(models, bench, published)
    plots = planned_plots(rows)
    backends, mixed, side = (json.loads(path.read_text()) if path.exists() else {}
                             for path in (args.backends, args.mixed_precision, args.side_by_side))
    text = render_readme(rows, bench, plots, backends, mixed, side)
    readme = args.out / 'README.md'
    # The hand-written family cards that exist in OUT get their generated sections.
    cards = {}
    for family in sorted({r['family'] for r in rows}):
        card = args.out / f'{family}.md'
        if card.exists():
            current = new = card.read_text()
            for section in family_sections(family, list_models(family), bench, backends, mixed, side):
                new = update_family_card(new, section, section[0], section[-1])
            cards[card] = (current, new)
    if args.check:
        stale = [path for path, (current, new) in [(readme, (readme.read_text() if readme.exists() else '', text)),
                                                  *cards.items()] if current != new]
        if stale:
            print(f"{', '.join(map(str, stale))} out of date: run `python tools/model_cards.py`", file=sys.stderr)
            return 1
        print(f'{readme} is up to date')
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    readme.write_text(text)
    for card, (_, new) in cards.items():
        card.write_text(new)
    if not args.no_plots:
        written = write_plots(rows, args.out / 'plots')
        assert written == plots, (written, plots)
    print(f'wrote {readme}' + ('' if args.no_plots else f' and {len(plots)} plot(s) in {args.out / "plots"}'))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Generate model_cards/README.md (one table of every zoo model) and its plots.

Examples:
    python tools/model_cards.py                 # rewrite model_cards/README.md and plots/
    python tools/model_cards.py --check         # exit 1 if README.md is out of date
    python tools/model_cards.py --no-plots --out /tmp/cards

Nothing in the table is typed by hand except the published top-1, which comes from
model_cards/published.json. Parameter counts come from the registry (exact, built on the meta
device); GMACs, throughput, latency, achieved efficiency and peak memory come from the
benchmark file that ``tools/benchmark.py --json`` writes (``make benchmark``). A model that
has not been benchmarked yet shows dashes and is listed under the table.

The attention backend tables (README.md and a generated section of each family card) come from
model_cards/backends.json, written by ``tools/check_backends.py --json`` (``make check-backends``).

Plots (PNG, with matplotlib): accuracy vs throughput, accuracy vs GMACs, and peak memory of a
``features_only`` forward vs input size for the models with dense-size measurements.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARDS = Path(__file__).resolve().parents[1] / 'model_cards'
PLOTS = ('accuracy_vs_throughput.png', 'accuracy_vs_gmacs.png', 'memory_vs_size.png')
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
            benchmarked=bool(throughput),
        ))
    return rows


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


def update_family_card(text: str, section: list[str]) -> str:
    """Replace the generated backend section of a hand-written card (appended if absent)."""
    block = '\n'.join(section)
    if BACKENDS_BEGIN in text and BACKENDS_END in text:
        head, rest = text.split(BACKENDS_BEGIN, 1)
        return head + block + rest.split(BACKENDS_END, 1)[1]
    return text.rstrip('\n') + '\n\n' + block + '\n'


def render_readme(rows: list[dict], bench: dict, plots: Sequence[str], backends: dict | None = None) -> str:
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
    backends = json.loads(args.backends.read_text()) if args.backends.exists() else {}
    text = render_readme(rows, bench, plots, backends)
    readme = args.out / 'README.md'
    # The hand-written family cards that exist in OUT get their generated backend section.
    cards = {}
    if backends:
        for family in sorted({r['family'] for r in rows}):
            card = args.out / f'{family}.md'
            if card.exists():
                current = card.read_text()
                cards[card] = (current, update_family_card(current, render_family_backends(backends, family)))
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

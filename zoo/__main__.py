"""``python -m zoo list`` / ``python -m zoo info NAME``: the zoo's models at a glance;
``python -m zoo backends``: which attention backend runs here, per op and per family."""
from __future__ import annotations

import argparse
import os
import re
import sys

import torch

from . import attention
from .registry import list_families, list_models, meta_model, model_info, smallest_variant
from .tables import format_table

def _row(info) -> list[str]:
    gmacs = f'{info.gmacs:.3f}' if info.gmacs is not None else '-'
    return [info.name, info.family, f'{info.params / 1e6:.3f}M', gmacs,
            'x'.join(map(str, info.input_size[1:])), ', '.join(info.weights) or '-', info.license or '-']


def family_ops(family: str) -> tuple[str, list[str]]:
    """The attention ops that a family's models call: its smallest model, built on the meta
    device (no memory, no computation), runs once at its default input size under
    :func:`zoo.attention.record_ops`. The ops are the same on every variant of a family.

    Returns:
        (the model's name, its ops in the order of ``zoo.attention.list_ops()``).
    """
    name = smallest_variant(family)
    model = meta_model(name, pretrained=False).eval()
    x = torch.empty(1, *model.pretrained_cfg['input_size'], device='meta')
    # Recorded under 'reference' (every op has it, and it runs on meta): the ops called do not
    # depend on the backend, and a global setting in the environment must not change them.
    with attention.record_ops() as calls, attention.use_backend('reference'), torch.no_grad():
        model(x)
    used = {op for op, _ in calls}
    return name, [op for op in attention.list_ops() if op in used]


def _status_word(op: str, backend: str, reason: str | None, default: str) -> str:
    if reason is not None:
        return f'no: {reason}'
    limits = attention.CALL_LIMITS.get((op, backend))
    return ('runs' + (' (default)' if backend == default else '')
            + (f'; limits: {limits} (such a call raises under backend=, and runs on the default '
               'under a preference)' if limits else ''))


def backends_report(families: list[str] | None = None) -> str:
    """The text of ``python -m zoo backends``: per op, which backend runs here and why each
    other does not; per family, what each backend setting runs its ops on.

    Args:
        families: the families to list (default: all).
    """
    device = f'CUDA ({torch.cuda.get_device_name()})' if torch.cuda.is_available() else 'no CUDA device'
    lines = [
        f'Attention backends on this machine: torch {torch.__version__}, {device}.',
        "Only an op's backend= argument is strict. zoo.attention.use_backend() and "
        f'${attention.ENV_VAR} are preferences:',
        'an op that the preferred backend cannot run runs on its default instead, with a one-time '
        'warning saying why.',
    ]
    setting = os.environ.get(attention.ENV_VAR, '').strip()
    if setting:
        lines.append(f'${attention.ENV_VAR}={setting!r} is set here: its rows below say what it runs.')
    lines += ['', 'Per op (pattern; one module of zoo.attention each):']
    for op in attention.list_ops():
        default = attention.default_backend(op)
        lines.append(f'  {op} (default: {default})')
        lines += [f'    {name:<10} {_status_word(op, name, reason, default)}'
                  for name, reason in attention.backend_status(op).items()]
    lines += ['', 'Per family (its ops recorded by running its smallest model once on the meta device;',
              'each row is what that backend, set as the preference, runs; the reasons are above):']
    for family in families or list_families():
        try:
            model, ops = family_ops(family)
        except Exception as exc:  # report the family, keep the others
            lines.append(f'  {family}: its ops could not be recorded ({type(exc).__name__}: {exc})')
            continue
        if not ops:
            lines.append(f"  {family} ({model}): no zoo.attention op (its attention is timm's own, or it "
                         'has none), so no backend setting changes it')
            continue
        lines.append(f'  {family} ({model}): '
                     + ', '.join(f'{op} (default: {attention.default_backend(op)})' for op in ops))
        for name in attention.BACKENDS:
            runs, falls = [], []
            for op in ops:
                with attention.use_backend(name):  # the preference rule itself decides
                    chosen = attention.get_backend(op)
                if chosen == name:
                    runs.append(op)
                else:
                    why = re.split(r' \(|: |; ', attention.backend_status(op)[name])[0]
                    falls.append(f'{op} -> {chosen} ({why})')
            said = 'runs every op' if len(runs) == len(ops) else f'runs {", ".join(runs) or "none of them"}'
            limited = [op for op in runs if (op, name) in attention.CALL_LIMITS]
            lines.append(f'    {name:<10} {said}' + (f'; falls back: {", ".join(falls)}' if falls else '')
                         + (f'; only calls within its limits (above): {", ".join(limited)}' if limited else ''))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m zoo', description=__doc__)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p_list = sub.add_parser('list', help='table of all models (or one family)')
    p_list.add_argument('--family', choices=list_families())
    p_list.add_argument('--no-flops', action='store_true', help='skip the GMACs column (faster)')
    p_info = sub.add_parser('info', help='details of one model')
    p_info.add_argument('name')
    p_backends = sub.add_parser('backends', help='which attention backend runs here, per op and per family')
    p_backends.add_argument('--family', choices=list_families(), action='append',
                            help='list only this family (repeatable)')
    args = ap.parse_args(argv)
    if args.cmd == 'backends':
        print(backends_report(args.family))
        return 0
    header = ['model', 'family', 'params', 'GMACs', 'input', 'weights', 'license']
    if args.cmd == 'list':
        print(format_table([_row(model_info(n, with_flops=not args.no_flops)) for n in list_models(args.family)], header))
        return 0
    if args.name not in list_models():
        print(f'unknown model {args.name!r}; see `python -m zoo list`', file=sys.stderr)
        return 2
    info = model_info(args.name)
    for key, value in zip(header, _row(info)):
        print(f'{key:>8}: {value}')
    print(f"{'default':>8}: {info.default_tag or '-'}")
    if info.replaces:
        ours = [t for t in info.weights if t not in info.timm_tags]
        print(f"{'replaces':>8}: {info.replaces}.{info.name} (timm's entrypoint; `import zoo` registers the "
              f"zoo's model under timm's name). timm's tags {', '.join(info.timm_tags)} keep timm's values "
              f"and {info.timm_tags[0]} stays the default; the zoo adds {', '.join(ours) or 'no tags'}.")
    for tag, notes in info.notes.items():  # where each value of a tag comes from, where its cfg says
        for note in notes:
            print(f"{'notes':>8}: {tag}: {note}")
    return 0


if __name__ == '__main__':
    sys.exit(main())

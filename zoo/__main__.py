"""``python -m zoo list`` / ``python -m zoo info NAME``: the zoo's models at a glance."""
from __future__ import annotations

import argparse
import sys

from .registry import list_families, list_models, model_info
from .tables import format_table


def _row(info) -> list[str]:
    gmacs = f'{info.gmacs:.3f}' if info.gmacs is not None else '-'
    return [info.name, info.family, f'{info.params / 1e6:.3f}M', gmacs,
            'x'.join(map(str, info.input_size[1:])), ', '.join(info.weights) or '-', info.license or '-']


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m zoo', description=__doc__)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p_list = sub.add_parser('list', help='table of all models (or one family)')
    p_list.add_argument('--family', choices=list_families())
    p_list.add_argument('--no-flops', action='store_true', help='skip the GMACs column (faster)')
    p_info = sub.add_parser('info', help='details of one model')
    p_info.add_argument('name')
    args = ap.parse_args(argv)
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
    return 0


if __name__ == '__main__':
    sys.exit(main())

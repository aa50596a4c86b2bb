#!/usr/bin/env python
"""Convert an official checkpoint to a safetensors file in the zoo's layout.

    python tools/convert_checkpoint.py van_b2 van_base_828.pth.tar van_b2.safetensors

The file is loaded safely (no pickled code runs), converted by the family's
``checkpoint_filter_fn``, checked key by key against the model, and saved with metadata
(model name, source file name and its SHA-256). The result loads with
``timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=OUT))``.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import timm

import zoo
from zoo.checkpoint import CheckpointError, save_safetensors


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('model', help='registered model name, e.g. van_b2 (see `python -m zoo list`)')
    ap.add_argument('src', type=Path, help='official checkpoint file')
    ap.add_argument('out', type=Path, help='output .safetensors file')
    ap.add_argument('--key', help="wrapper key in the file (default: 'state_dict', 'model', ...)")
    ap.add_argument('--num-classes', type=int, help="the file's classifier size if not the cfg's")
    args = ap.parse_args(argv)
    if args.model not in zoo.list_models():
        ap.error(f'unknown model {args.model!r}; see `python -m zoo list`')
    if args.out.suffix != '.safetensors':
        ap.error('the output file must end in .safetensors')
    extra = {'num_classes': args.num_classes} if args.num_classes else {}
    overlay = dict(file=str(args.src), **extra)
    try:
        model = timm.create_model(args.model, pretrained=True, pretrained_cfg_overlay=overlay,
                                  checkpoint_key=args.key, **extra)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    metadata = {'model': args.model, 'source': args.src.name, 'source_sha256': _sha256(args.src),
                'zoo_version': zoo.__version__}
    save_safetensors(model.state_dict(), args.out, metadata)
    n = sum(v.numel() for v in model.state_dict().values())
    print(f'{args.model}: {len(model.state_dict())} tensors ({n:,} values) -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Convert an official checkpoint to a file in the zoo's layout.

Classification files, to a safetensors file that ``timm.create_model`` loads:

    python tools/convert_checkpoint.py van_b2 van_base_828.pth.tar van_b2.safetensors

Dense releases (a whole detector or segmentor saved by the official mmdet 2.x / mmseg 0.x
code), with the config that evaluates them, to an mm-3 checkpoint or a safetensors file:

    python tools/convert_checkpoint.py --dense configs/biformer/mask-rcnn_biformer-s_fpn_1x_coco.py \\
        maskrcnn_1x_biformer_small.pth mask-rcnn_biformer-s_fpn_1x_coco.pth

Files are loaded safely (no pickled code runs), converted (the family's
``checkpoint_filter_fn``; for dense files also the backbone prefix, its output norms and the
neck and heads), checked key by key against the model (every tensor must fit), and saved with
metadata (model or config, source file name and its SHA-256).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the zoo itself, also when it is not installed

import timm  # noqa: E402

import zoo  # noqa: E402
from zoo.checkpoint import CheckpointError, save_safetensors  # noqa: E402


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def convert_classification(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    model_name, src, out = args.model, Path(args.src), Path(args.out)
    if model_name not in zoo.list_models():
        ap.error(f'unknown model {model_name!r}; see `python -m zoo list`')
    if out.suffix != '.safetensors':
        ap.error('the output file must end in .safetensors')
    extra = {'num_classes': args.num_classes} if args.num_classes else {}
    overlay = dict(file=str(src), **extra)
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay,
                              checkpoint_key=args.key, **extra)
    metadata = {'model': model_name, 'source': src.name, 'source_sha256': _sha256(src),
                'zoo_version': zoo.__version__}
    save_safetensors(model.state_dict(), out, metadata)
    n = sum(v.numel() for v in model.state_dict().values())
    print(f'{model_name}: {len(model.state_dict())} tensors ({n:,} values) -> {out}')
    return 0


def convert_dense(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    config, src, out = Path(args.dense), Path(args.src), Path(args.out)
    if not config.is_file():
        ap.error(f'config not found: {config}')
    if out.suffix not in ('.pth', '.safetensors'):
        ap.error('the output file must end in .pth (an mm checkpoint) or .safetensors')
    import zoo.mm  # noqa: F401  (the backbones, necks and heads the config names)
    from zoo.mm.checkpoint import convert_dense_checkpoint
    model = convert_dense_checkpoint(config, src, out, metadata={
        'source_sha256': _sha256(src), 'zoo_version': zoo.__version__})
    state = model.state_dict()
    n = sum(v.numel() for v in state.values())
    print(f'{config.name}: {len(state)} tensors ({n:,} values) -> {out}')
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('paths', nargs='+', metavar='[MODEL] SRC OUT',
                    help='registered model name (not with --dense), the official file, the output file')
    ap.add_argument('--dense', metavar='CONFIG',
                    help='convert a whole detector or segmentor file for this mm config')
    ap.add_argument('--key', help="wrapper key in the file (default: 'state_dict', 'model', ...)")
    ap.add_argument('--num-classes', type=int, help="the file's classifier size if not the cfg's")
    args = ap.parse_args(argv)
    expected = 2 if args.dense else 3
    if len(args.paths) != expected:
        ap.error('expected SRC OUT after --dense CONFIG' if args.dense else 'expected MODEL SRC OUT')
    if args.dense:
        args.src, args.out = args.paths
    else:
        args.model, args.src, args.out = args.paths
    try:
        return convert_dense(args, ap) if args.dense else convert_classification(args, ap)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())

"""Export a timm / zoo model to ONNX and optionally check it against PyTorch with ONNX Runtime.

Examples:
    python tools/export_onnx.py davit_tiny -o davit_tiny.onnx --check
    python tools/export_onnx.py resnet18 --features --img-size 512 512 --check
    python tools/export_onnx.py van_b0 --pretrained-file van_b0.pth --static

Dynamic batch/height/width axes are tried first and verified at a second shape; the
output says which axes stayed dynamic and why others were dropped (see zoo/export.py).
With ``--check`` the exit status is 1 when an output's max relative error exceeds --tol.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402

from zoo.export import check_onnx, export_onnx  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='timm model name (zoo models are registered on import)')
    parser.add_argument('-o', '--output', type=Path, help='ONNX file (default: MODEL[_features].onnx)')
    parser.add_argument('--features', action='store_true', help='export features_only (outputs feat0..)')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                        help="export size (default: the model's pretrained input size)")
    parser.add_argument('--batch-size', type=int, default=1, help='batch of the example input')
    parser.add_argument('--static', action='store_true', help='do not try dynamic batch/height/width')
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument('--dynamo', action='store_true', help='use the torch.export-based exporter')
    parser.add_argument('--pretrained-file', type=Path, help='load weights from this checkpoint file')
    parser.add_argument('--check', action='store_true', help='compare with PyTorch in ONNX Runtime')
    parser.add_argument('--tol', type=float, default=1e-4, help='max relative error accepted by --check')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kwargs: dict = {'pretrained': False}
    if args.pretrained_file is not None:
        kwargs = {'pretrained': True, 'pretrained_cfg_overlay': {'file': str(args.pretrained_file)}}
    if args.features:
        kwargs['features_only'] = True
    model = timm.create_model(args.model, **kwargs).eval()
    channels, *default_hw = model.pretrained_cfg['input_size']
    height, width = args.img_size or default_hw
    output = args.output or Path(f'{args.model}{"_features" if args.features else ""}.onnx')

    info = export_onnx(model, output, input_size=(args.batch_size, channels, height, width), opset=args.opset,
                       dynamic=not args.static, dynamo=args.dynamo)
    print(f'wrote {info.path} ({Path(info.path).stat().st_size / 2 ** 20:.1f} MiB), opset {info.opset}, '
          f'{"dynamo" if info.dynamo else "tracer"} exporter, {info.export_s:.1f} s')
    axes = ', '.join(info.dynamic_axes) or 'none'
    print(f'  input  {info.input_name} {list(info.input_shape)}, dynamic axes: {axes}')
    print(f'  outputs {", ".join(info.output_names)}')
    if info.verified_rel_err:
        worst = max(info.verified_rel_err.values())
        print(f'  dynamic shapes verified at {list(info.verified_shape)}: max rel err {worst:.2e}')
    for note in info.notes:
        print(f'  note: {note}')
    if not args.check:
        return 0
    errors = check_onnx(model, info.path, torch.randn(info.input_shape))
    print(f'ONNX Runtime vs PyTorch at {list(info.input_shape)} (max |a-b| / max |b|):')
    for name, err in errors.items():
        print(f'  {name:8s} {err:.2e}{"" if err <= args.tol else f"  > tol {args.tol:g}"}')
    return 0 if max(errors.values()) <= args.tol else 1


if __name__ == '__main__':
    sys.exit(main())

"""Measure how far mixed precision moves each zoo model's logits from float32.

Examples:
    python tools/mixed_precision.py --json model_cards/mixed_precision.json   # every zoo model
    python tools/mixed_precision.py van_b0 davit_tiny
    python tools/mixed_precision.py --family van --no-features

For each model and dtype (bfloat16, float16): the error of the logits under
``torch.autocast('cpu', dtype=...)`` and of the cast model (a copy ``.to(dtype)`` with an input
of that dtype, no autocast), as ``max|y - y_fp32| / max|y_fp32|``; and whether the
``features_only`` maps of one 512x512 image are finite under autocast. The weights and inputs
are those of tests/test_mixed_precision.py: a variant with a parity fixture (tests/data/parity)
loads its official-format checkpoint through the normal pretrained path and runs the fixture's
input; the others are built after ``torch.manual_seed(0)``, take their BatchNorm statistics
from a batch (zoo.layers.calibrate_batchnorm_statistics) and run ``torch.randn(2, *input_size)``
from a generator seeded 0. Next to ours, the official implementation's error on the same
checkpoint and input (tests/data/amp_bounds.json), the bound the test holds ours to (1.5x the
official, else 1e-2 float16 / 5e-2 bfloat16) and the ratio ours / official.

JSON layout (``--json PATH`` merges per model, so runs can be split):
    schema, settings: {torch, timm, threads, metric, dtypes, input notes},
    runs: [{started, argv, models, load_avg: {start, end}}],
    models: {NAME: {updated, weights ('parity checkpoint' | 'seeded init'), input_shape,
        logits_absmax (max|y_fp32|), load_avg: {start, end},
        DTYPE: {autocast_err, cast_err, official_autocast_err, official_cast_err,
            autocast_bound, cast_bound, autocast_ratio, cast_ratio, features_512_finite},
        errors: {STAGE: message} (from the model's latest run)}}
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402
from timm.models import get_pretrained_cfg  # noqa: E402

from zoo.layers import calibrate_batchnorm_statistics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / 'tests' / 'data'
# The tests' own parity checkpoints and inputs (one fill rule), and benchmark.py's JSON merge.
sys.path[:0] = [str(ROOT / 'tests'), str(ROOT / 'tools')]
from benchmark import merge, write_json  # noqa: E402
from zoo_testutils import parity_checkpoint, parity_fixture_names, parity_input  # noqa: E402

SCHEMA = 'zoo-mixed-precision/1'
DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}
# tests/test_mixed_precision.py: 1.5x the official error, else these
DEFAULT_BOUNDS = {'float16': 1e-2, 'bfloat16': 5e-2}
OFFICIAL_FACTOR = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('models', nargs='*', metavar='MODEL', help='zoo models (default: all registered)')
    parser.add_argument('--family', action='append', default=[], help='every variant of this family (repeatable)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    parser.add_argument('--no-features', action='store_true', help='skip the 512x512 features_only check')
    parser.add_argument('--json', type=Path, help='merge the results into this JSON file')
    return parser.parse_args(argv)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max|y - ref| / max|ref| (in float32)."""
    y, ref = y.float(), ref.float()
    return ((y - ref).abs().max() / ref.abs().max()).item()


def parity_names() -> set[str]:
    return set(parity_fixture_names())


def build_model(name: str, features_only: bool = False) -> torch.nn.Module:
    """The float32 model with deterministic weights, in eval mode (tests/test_mixed_precision.py's)."""
    if name in parity_names():
        with tempfile.TemporaryDirectory() as d:
            path = parity_checkpoint(name, Path(d) / f'{name}.pth')
            return timm.create_model(name, pretrained=True, features_only=features_only,
                                     pretrained_cfg_overlay=dict(file=str(path))).eval()
    # No official-format checkpoint: the model's own seeded init. (The fill rule on our own keys
    # drives deep stages' float32 activations past 1e6 in DaViT-S / BiFormer-S, beyond float16's
    # range: no precision could hold them, so it would test the weights, not the model.) Its
    # BatchNorms get statistics from a batch: with the initial mean 0 / variance 1 HaloNet-50's
    # logits come out at 2e-6, in float16's subnormal range (the same kind of test of the weights).
    torch.manual_seed(0)
    model = timm.create_model(name, features_only=features_only)
    calibration = torch.randn(4, *get_pretrained_cfg(name).input_size, generator=torch.Generator().manual_seed(2))
    return calibrate_batchnorm_statistics(model, calibration).eval()


def model_input(name: str) -> torch.Tensor:
    """The test's input: the parity fixture's, else two seeded images at the pretrained size."""
    if name in parity_names():
        return parity_input(name)
    return torch.randn(2, *get_pretrained_cfg(name).input_size, generator=torch.Generator().manual_seed(0))


def official_errors() -> dict[str, dict[str, Any]]:
    return json.loads((DATA / 'amp_bounds.json').read_text())['models']


def measure_logits(model: torch.nn.Module, x: torch.Tensor, dtypes: dict[str, torch.dtype] = DTYPES,
                   ref: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Per dtype: the autocast and cast-model errors of ``model(x)`` against its float32 logits
    (``ref``, computed here if not given)."""
    out = {}
    with torch.no_grad():
        ref = model(x) if ref is None else ref
        for label, dtype in dtypes.items():
            with torch.autocast('cpu', dtype=dtype):
                autocast_y = model(x)
            cast_y = copy.deepcopy(model).to(dtype)(x.to(dtype))
            out[label] = {'autocast_err': rel_err(autocast_y, ref), 'cast_err': rel_err(cast_y, ref),
                          'autocast_finite': bool(torch.isfinite(autocast_y).all()),
                          'cast_finite': bool(torch.isfinite(cast_y).all())}
    return out


def features_finite(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether every feature map of ``model(x)`` under autocast is finite."""
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        return all(bool(torch.isfinite(f).all()) for f in model(x))


def with_official(name: str, errors: dict[str, dict[str, float]], official: dict[str, dict[str, Any]]
                  ) -> dict[str, dict[str, Any]]:
    """Add the official errors, the test's bounds and the ratios ours / official to ``errors``."""
    for label, entry in errors.items():
        for kind, prefix in (('autocast', ''), ('cast', 'model_')):
            ref = official.get(name, {}).get(prefix + label)
            ref = ref if isinstance(ref, float) else None
            entry[f'official_{kind}_err'] = ref
            entry[f'{kind}_bound'] = OFFICIAL_FACTOR * ref if ref is not None else DEFAULT_BOUNDS[label]
            entry[f'{kind}_ratio'] = entry[f'{kind}_err'] / ref if ref else None
    return errors


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def measure_model(name: str, features: bool = True) -> dict[str, Any]:
    """Every measurement of one model (the JSON's ``models.NAME``)."""
    result: dict[str, Any] = {'load_avg': {'start': _load_avg()},
                              'weights': 'parity checkpoint' if name in parity_names() else 'seeded init'}
    x = model_input(name)
    result['input_shape'] = list(x.shape)
    model = build_model(name)
    with torch.no_grad():
        ref = model(x)
    # Tiny logits (some seeded inits) fall into float16's subnormal range: the card says so
    result['logits_absmax'] = ref.abs().max().item()
    result.update(with_official(name, measure_logits(model, x, ref=ref), official_errors()))
    if features:
        feats = build_model(name, features_only=True)
        x512 = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
        for label, dtype in DTYPES.items():
            result[label]['features_512_finite'] = features_finite(feats, x512, dtype)
    result['load_avg']['end'] = _load_avg()
    result['updated'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    return result


def resolve_models(args: argparse.Namespace) -> list[str]:
    import zoo  # noqa: F401  (registers the families)
    from zoo.registry import list_models
    names = list(args.models) + [n for f in args.family for n in list_models(f)]
    if not names:
        return list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise SystemExit(f'not zoo models: {unknown}; see `python -m zoo list`')
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = resolve_models(args)
    doc: dict[str, Any] = {}
    if args.json is not None and args.json.exists():
        doc = json.loads(args.json.read_text())
    doc.update(schema=SCHEMA, settings={
        'torch': torch.__version__, 'timm': timm.__version__, 'threads': args.threads,
        'metric': 'max|y - y_fp32| / max|y_fp32| of the logits (eval mode, no_grad)',
        'dtypes': list(DTYPES),
        'input': 'parity fixture input for variants with a parity checkpoint, else '
                 'torch.randn(2, *input_size) seeded 0; features: one 512x512 image seeded 1',
        'bounds': f'{OFFICIAL_FACTOR}x the official error, else '
                  + ', '.join(f'{d} {b:g}' for d, b in DEFAULT_BOUNDS.items()),
        'command': shlex.join(['python', 'tools/mixed_precision.py', *(sys.argv[1:] if argv is None else argv)])})
    doc.setdefault('models', {})
    run = {'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'argv': sys.argv[1:] if argv is None else argv,
           'models': names, 'load_avg': {'start': _load_avg()}}
    doc.setdefault('runs', []).append(run)
    failed = False
    for name in names:
        print(f'{name} ...', flush=True)
        try:
            result = measure_model(name, features=not args.no_features)
        except Exception as err:  # record and go on: a run over every model must reach the others
            traceback.print_exc()
            result, failed = {'errors': {'measure': f'{type(err).__name__}: {err}'[:500]}}, True
        for label in DTYPES:
            r = result.get(label, {})
            if r:
                print(f"  {label}: autocast {r['autocast_err']:.2e} (bound {r['autocast_bound']:.2e}), "
                      f"cast {r['cast_err']:.2e} (bound {r['cast_bound']:.2e}), "
                      f"512 features finite: {r.get('features_512_finite', '-')}", flush=True)
        if args.json is not None:
            entry = doc['models'].setdefault(name, {})
            entry.pop('errors', None)  # errors describe the latest run of the model only
            merge(entry, result)
            run['load_avg']['end'] = _load_avg()
            write_json(args.json, doc)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

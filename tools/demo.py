#!/usr/bin/env python
"""The zoo's demo, fully offline.

1. lists every registered model with its parameters and GMACs;
2. for every family, builds the smallest variant, loads an official-format checkpoint
   (rebuilt from the parity fixtures in tests/data/parity) and checks its logits against
   the official implementation's;
3. runs a ``features_only`` backbone on a real photo shipped with scikit-image and saves a
   picture of its feature maps;
4. exports a model to ONNX and checks ONNX Runtime against PyTorch;
5. trains a small detector for a few iterations on the generated toy dataset, once the
   OpenMMLab integration is installed.

Ends with a summary table. ``--quick`` skips the GMACs column and the training step.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import timm
import torch

import zoo
from zoo.registry import list_families, list_models, model_info, smallest_variant
from zoo.tables import format_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests'))  # the parity fixtures' loader lives with the tests
import zoo_testutils as parity  # noqa: E402

OUT = REPO / 'demo_outputs'


class Demo:
    def __init__(self) -> None:
        self.results: list[list[str]] = []
        self.failed = False

    def step(self, title: str, fn: Callable[[], str]) -> None:
        print(f'\n== {title}', flush=True)
        start = time.perf_counter()
        try:
            outcome, status = fn(), 'ok'
        except Exception as e:  # the demo reports every step, whatever fails
            traceback.print_exc()
            outcome, status = f'{type(e).__name__}: {str(e).splitlines()[0][:80]}', 'FAILED'
            self.failed = True
        seconds = time.perf_counter() - start
        print(f'-> {status}: {outcome} ({seconds:.1f} s)', flush=True)
        self.results.append([title, status, outcome, f'{seconds:.1f}'])


def list_all(with_flops: bool) -> str:
    rows = []
    names = list_models()
    for i, name in enumerate(names, 1):
        info = model_info(name, with_flops=with_flops)
        print(f'  [{i}/{len(names)}] {name}', flush=True)
        gmacs = f'{info.gmacs:.3f}' if info.gmacs is not None else '-'
        rows.append([name, info.family, f'{info.params / 1e6:.3f}M', gmacs, ', '.join(info.weights)])
    print(format_table(rows, ['model', 'family', 'params', 'GMACs', 'weights']))
    return f'{len(names)} models in {len(list_families())} families'


def check_parity(name: str, workdir: Path) -> str:
    fx = parity.parity_fixture(name)
    path = parity.parity_checkpoint(name, workdir / f'{name}.pth')
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **fx.get('constructor_kwargs', {})).eval()
    errors = []
    for which, expected in (('input', 'expected_logits'), ('alt_input', 'alt_expected_logits')):
        if which in fx:
            with torch.no_grad():
                y = model(parity.parity_input(name, which))
            errors.append(f"{'x'.join(map(str, fx[which]['shape'][2:]))}: {parity.rel_err(y, torch.tensor(fx[expected])):.1e}")
            if parity.rel_err(y, torch.tensor(fx[expected])) > 1e-4:
                raise AssertionError(f'{name} differs from the official logits ({errors[-1]})')
    return f'{name} matches the official logits (relative error {", ".join(errors)})'


def features_on_photo(name: str, workdir: Path) -> str:
    from PIL import Image
    from skimage import data as sk_data
    image = Image.fromarray(sk_data.astronaut())  # 512x512 RGB, shipped with scikit-image
    path = parity.parity_checkpoint(name, workdir / f'{name}_features.pth')
    model = timm.create_model(name, pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    cfg = timm.data.resolve_data_config(model=model)
    x = timm.data.create_transform(**cfg)(image).unsqueeze(0)
    with torch.no_grad():
        feats = model(x)
    shapes = ', '.join('x'.join(map(str, f.shape[1:])) for f in feats)
    # show what the model saw: the resized, centre-cropped image, denormalised
    seen = (x[0] * torch.tensor(cfg['std']).view(3, 1, 1) + torch.tensor(cfg['mean']).view(3, 1, 1)).clamp(0, 1)
    picture = _save_feature_picture(seen.permute(1, 2, 0).numpy(), feats, OUT / f'features_{name}.png')
    return f'{name} on a {image.size[0]}x{image.size[1]} photo -> {shapes}; picture: {picture}'


def _save_feature_picture(image, feats: list[torch.Tensor], path: Path) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(feats) + 1, figsize=(3 * (len(feats) + 1), 3))
    axes[0].imshow(image)
    axes[0].set_title(f'input {image.shape[1]}x{image.shape[0]}')
    for ax, f, i in zip(axes[1:], feats, range(len(feats))):
        ax.imshow(f[0].norm(dim=0).numpy(), cmap='magma')
        ax.set_title(f'stage {i}: {f.shape[1]}x{f.shape[2]}x{f.shape[3]}')
    for ax in axes:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path.relative_to(REPO))


def onnx_roundtrip(name: str, workdir: Path) -> str:
    from zoo.export import check_onnx, export_onnx
    model = timm.create_model(name).eval()
    info = export_onnx(model, workdir / f'{name}.onnx', input_size=(1, 3, 224, 224))
    x = torch.randn(2, 3, 256, 320) if 'height' in info.dynamic_axes else torch.randn(1, 3, 224, 224)
    err = max(check_onnx(model, info.path, x).values())
    if err > 1e-4:
        raise AssertionError(f'ONNX Runtime differs from PyTorch: relative error {err:.1e}')
    axes = '/'.join(info.dynamic_axes) or 'none'
    return f'{name}: ONNX Runtime matches PyTorch at {"x".join(map(str, x.shape))} (rel err {err:.1e}; dynamic {axes})'


def train_detector(workdir: Path) -> str:
    import toy_training  # beside this script; needs the mm extra, which `make setup` installs
    return toy_training.train_toy_detector(workdir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='skip GMACs and training')
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    demo = Demo()
    print(f'zoo {zoo.__version__}, torch {torch.__version__}, timm {timm.__version__}')
    with tempfile.TemporaryDirectory(prefix='zoo-demo-') as tmp:
        workdir = Path(tmp)
        demo.step('registered models', lambda: list_all(with_flops=not args.quick))
        fixtures = set(parity.parity_fixture_names())
        for family in list_families():
            # the family's fixture: its smallest variant's, else whichever variant has one
            # (CrossFormer's fixture is crossformer_tiny, its smallest model is pp_small)
            name = next((n for n in (smallest_variant(family), *list_models(family)) if n in fixtures), None)
            if name is not None:
                demo.step(f'official checkpoint: {family}', lambda n=name: check_parity(n, workdir))
        first = next((smallest_variant(f) for f in list_families() if smallest_variant(f) in fixtures), None)
        if first:
            demo.step('features on a photo', lambda: features_on_photo(first, workdir))
            demo.step('ONNX export', lambda: onnx_roundtrip(first, workdir))
        if not args.quick:
            demo.step('train a detector (toy data)', lambda: train_detector(workdir))
    print('\n' + format_table(demo.results, ['step', 'status', 'result', 'seconds']))
    return 1 if demo.failed else 0


if __name__ == '__main__':
    sys.exit(main())

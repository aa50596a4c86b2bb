"""Helpers shared by the tests (a unique module name: mmseg installs a top-level ``tests``)."""
from __future__ import annotations

import json
import math
import zlib
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from zoo.registry import list_families, list_models, smallest_variant

ALL_MODELS = list_models()
SMALLEST = {smallest_variant(f) for f in list_families()}


def model_params(names: list[str] | None = None) -> list:
    """Parametrize over models: the smallest of each family always, the others under all_variants."""
    names = ALL_MODELS if names is None else names
    return [pytest.param(n, id=n, marks=() if n in SMALLEST else pytest.mark.all_variants) for n in names]


DATA = Path(__file__).parent / 'data'
PARITY = DATA / 'parity'


@lru_cache(maxsize=None)
def parity_fixture(name: str) -> dict:
    """A parity fixture: an official checkpoint layout, its fill rule, and the official logits."""
    return json.loads((PARITY / f'{name}.json').read_text())


def parity_fixture_names() -> list[str]:
    return sorted(p.stem for p in PARITY.glob('*.json'))


def rule_tensor(key: str, shape: list[int]) -> torch.Tensor:
    # The fixtures' deterministic fill rule (see tests/data/parity/README.md).
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    shape = tuple(shape)
    if key.endswith('running_mean'):
        return 0.1 * torch.randn(shape, generator=g)
    if key.endswith('running_var'):
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) == 1 and key.endswith('weight'):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if key.endswith('bias'):
        return 0.02 * torch.randn(shape, generator=g)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else (shape[0] if shape else 1)
    return torch.randn(shape, generator=g) * fan_in ** -0.5


def parity_checkpoint(name: str, path: Path) -> Path:
    """Write the fixture's official-format checkpoint to ``path`` (``{wrapper: state_dict}``)."""
    fx = parity_fixture(name)
    sd = {}
    for entry in fx['state_dict']:
        key, shape, dtype, kind = entry[:4]
        if kind == 'literal':
            sd[key] = torch.tensor(entry[4], dtype=getattr(torch, dtype)).reshape(shape)
        else:
            sd[key] = rule_tensor(key, shape)
    torch.save({fx['wrapper']: sd} if fx.get('wrapper') else sd, path)
    return path


def parity_input(name: str, which: str = 'input') -> torch.Tensor:
    spec = parity_fixture(name)[which]
    return torch.randn(*spec['shape'], generator=torch.Generator().manual_seed(spec['seed']))


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def assert_backends_agree_in_training(make_model, x: torch.Tensor, backends: tuple[str, str] = ('reference', 'sdpa')) -> None:
    """A fresh model per backend (``make_model()``, in train mode): the outputs and every
    parameter's gradient of ``sum(out ** 2)`` agree between the two attention backends."""
    from zoo.attention import use_backend
    results = []
    for backend in backends:
        model = make_model().train()
        with use_backend(backend):
            out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()]))
    (out_ref, grads_ref), (out_other, grads_other) = results
    torch.testing.assert_close(out_other, out_ref, atol=1e-5, rtol=1e-4)
    for g, g_ref in zip(grads_other, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-3)

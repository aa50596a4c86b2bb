"""Mixed precision: autocast and float16/bfloat16 models stay close to float32 and finite.

The bound for a model's autocast error is 1.5x the error the official implementation makes on
the same checkpoint and input (``tests/data/amp_bounds.json``, measured outside the repo);
variants without an official measurement (no official code, or no parity checkpoint) get
1e-2 in float16 and 5e-2 in bfloat16. The error is ``max|y - y_fp32| / max|y_fp32|`` of the
logits. Models with a parity checkpoint load it through the normal pretrained path; the
others keep their own seeded initialisation, with BatchNorm statistics taken from a batch.
"""
from __future__ import annotations

import copy
import json
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo.train_profiling import set_grad_checkpointing
from zoo_testutils import ALL_MODELS, DATA, SMALLEST, parity_fixture_names, rel_err

sys.path.append(str(Path(__file__).resolve().parents[1] / 'tools'))  # not a package
import mixed_precision  # noqa: E402  (the models and inputs, shared with the cards' measurement)

pytestmark = pytest.mark.usefixtures('one_thread')

OFFICIAL = json.loads((DATA / 'amp_bounds.json').read_text())['models']
DEFAULT_BOUNDS = {'float16': 1e-2, 'bfloat16': 5e-2}
DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
PARITY_NAMES = set(parity_fixture_names())
# The smallest variant of each family, and every variant with an official measurement.
DEFAULT_MODELS = SMALLEST | (PARITY_NAMES & set(ALL_MODELS))


def _params(*extra: tuple, sweep_only: tuple = ()) -> list:
    """(name, dtype, *extra) for every model; outside the default set, and for the ``sweep_only``
    combinations, under ``all_variants``."""
    out = []
    for name in ALL_MODELS:
        for dtype in DTYPES:
            for e in (extra or [()]):
                swept = name not in DEFAULT_MODELS or (dtype, *e) in sweep_only
                out.append(pytest.param(name, dtype, *e, id='-'.join([name, dtype, *map(str, e)]),
                                        marks=pytest.mark.all_variants if swept else ()))
    return out


def bound(name: str, dtype: str, kind: str = '') -> float:
    """1.5x the official error (``kind``: '' for autocast, 'model_' for a cast model), else the default."""
    official = OFFICIAL.get(name, {}).get(kind + dtype)
    return 1.5 * official if isinstance(official, float) else DEFAULT_BOUNDS[dtype]


@lru_cache(maxsize=1)
def _model(name: str, features_only: bool = False) -> torch.nn.Module:
    """The float32 model with deterministic weights (cached: the tests of one model run in a row);
    the same models the cards' tools/mixed_precision.py measures."""
    return mixed_precision.build_model(name, features_only)


def _input(name: str) -> torch.Tensor:
    return mixed_precision.model_input(name)


@lru_cache(maxsize=1)
def _float32_logits(name: str) -> torch.Tensor:
    with torch.no_grad():
        return _model(name)(_input(name))


@pytest.mark.parametrize('name, dtype', _params())
def test_autocast_logits_close_to_float32(name, dtype):
    model, x = _model(name), _input(name)
    with torch.no_grad(), torch.autocast('cpu', dtype=DTYPES[dtype]):
        y = model(x)
    ref = _float32_logits(name)
    assert torch.isfinite(y).all()
    err = rel_err(y.float(), ref)
    assert err <= bound(name, dtype), f'{name} under {dtype} autocast: error {err:.2e} > bound {bound(name, dtype):.2e}'


@pytest.mark.parametrize('name, dtype', _params())
def test_cast_model_close_to_float32(name, dtype):
    # model.half() / model.bfloat16() with an input of the same dtype, no autocast
    model = copy.deepcopy(_model(name)).to(DTYPES[dtype])
    with torch.no_grad():
        y = model(_input(name).to(DTYPES[dtype]))
    assert y.dtype == DTYPES[dtype] and torch.isfinite(y).all()
    err, limit = rel_err(y.float(), _float32_logits(name)), bound(name, dtype, 'model_')
    assert err <= limit, f'{name}.to({dtype}): error {err:.2e} > bound {limit:.2e}'


@pytest.mark.parametrize('name, dtype', _params())
def test_autocast_features_finite_at_512(name, dtype):
    model = _model(name, features_only=True)
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast('cpu', dtype=DTYPES[dtype]):
        feats = model(x)
    for i, f in enumerate(feats):
        assert torch.isfinite(f).all(), f'{name} under {dtype} autocast: feature {i} {tuple(f.shape)} is not finite'


# float16 backward kernels are slow on CPU: float16 with grad checkpointing only in the sweep
@pytest.mark.parametrize('name, dtype, grad_checkpointing',
                         _params((False,), (True,), sweep_only=(('float16', True),)))
def test_autocast_training_step_finite(name, dtype, grad_checkpointing):
    model = copy.deepcopy(_model(name)).train()
    if grad_checkpointing:
        set_grad_checkpointing(model, True)
    # 64x64 keeps float16's slow CPU backward kernels cheap (every model takes any size). Four
    # images, not the fixture's two: train-mode BatchNorm over two samples (SHViT's head
    # BatchNorm1d) maps each feature to +-1 with a gradient ~ 1 / |a - b|, so a step on two
    # images is chaotic even in float32 (its gradients change 10x with the summation order).
    x = _input(name)[:, :, :64, :64]
    x = torch.cat([x, torch.randn(4 - x.shape[0], *x.shape[1:], generator=torch.Generator().manual_seed(3))])
    target = torch.arange(x.shape[0]) * 7
    with torch.autocast('cpu', dtype=DTYPES[dtype]):
        # logits reach ~1e3 with these weights: scale them so the loss is not saturated
        loss = F.cross_entropy(model(x).float() / 100, target)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert sum(g is not None for g in grads.values()) >= 0.9 * len(grads), 'most parameters got no gradient'
    bad = [k for k, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    assert not bad, f'non-finite gradients under {dtype} autocast: {bad[:5]}'


def test_position_bias_cache_is_not_rounded_by_autocast():
    # CrossFormer's dynamic position bias caches its (heads, N, N) table in eval mode: a first
    # call under autocast must not leave a bfloat16-rounded table for later float32 calls.
    from zoo.layers.dynamic_position_bias import DynamicPositionBias
    torch.manual_seed(0)
    bias = DynamicPositionBias(32, 4).eval()
    with torch.no_grad():
        exact = bias.compute((7, 7))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            under_autocast = bias(7, dtype=torch.float32)
        torch.testing.assert_close(under_autocast, exact)
        torch.testing.assert_close(bias(7, dtype=torch.float32), exact)

"""No backend setting breaks a model: a global setting (``use_backend()`` or
``$ZOO_ATTENTION_BACKEND``) is a preference, only an op's ``backend=`` argument is strict; and
``python -m zoo backends`` says what runs here.

The expectations are written out here from the family files and the backend modules (which
ops each family calls, which backends implement each op), not taken from the dispatch table.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers the families)
import zoo.attention as za
from zoo.attention import _backends
from zoo.registry import list_families, smallest_variant

ROOT = Path(__file__).resolve().parent.parent

# The zoo.attention ops each family's layers call (read from backbones/<family>.py).
FAMILY_OPS = {
    'biformer': {'dense_attention', 'routed_attention'},
    'crossformer': {'dense_attention', 'grouped_attention'},
    'davit': {'window_attention'},  # the spatial blocks' windows (SpatialWindowBlock)
    'halonet': {'halo_attention'},
    'illama': {'causal_post_softmax_attention'},
    'litv2': {'dense_attention', 'window_attention'},
    'lookupvit': {'dense_attention', 'gather_attention', 'infuse_attention'},
    'ravlt': {'dense_attention', 'linear_attention'},
    'shvit': set(),  # timm's single-head attention
    'van': set(),  # large-kernel convolutions
}
# The backends that have a path for each op (the paths written in each pattern's module).
IMPLEMENTED = {
    'dense_attention': {'reference', 'sdpa', 'xformers'},
    'window_attention': {'reference', 'sdpa', 'natten', 'xformers'},
    'grouped_attention': {'reference', 'sdpa', 'natten', 'xformers'},
    'routed_attention': {'reference', 'sdpa', 'triton'},
    'linear_attention': {'reference'},
    'halo_attention': {'reference', 'sdpa'},
    'causal_post_softmax_attention': {'reference', 'sdpa'},
    'gather_attention': {'reference'},
    'infuse_attention': {'reference'},
}
# Calls a backend that runs an op here still refuses, per family (its can_run check): NATTEN
# has no attention bias, and CrossFormer's groups always carry the dynamic position bias.
REFUSED = {('crossformer', 'natten'): {'grouped_attention'}}


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the environment, no fallback warned yet, triton without its interpreter."""
    monkeypatch.delenv(za.ENV_VAR, raising=False)
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(_backends, '_WARNED', set())


def test_expectations_cover_every_family_and_op() -> None:
    assert set(FAMILY_OPS) == set(list_families())
    assert set(IMPLEMENTED) == set(za.list_ops())


@pytest.fixture(scope='module')
def family_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    """Each family's smallest model, its input and its features with no setting at all."""
    torch.set_num_threads(1)
    models = {}
    saved = os.environ.pop(za.ENV_VAR, None)
    try:
        for family in list_families():
            torch.manual_seed(0)
            with za.record_ops() as calls:
                model = timm.create_model(smallest_variant(family)).eval()
            # Building calls no attention op, so it is the same under every setting: the tests
            # below build each model once and run it under each setting.
            assert calls == [], f'{family}: building the model called {calls}'
            with torch.no_grad():
                # timm zero-initialises some residual gains (HaloNet, SHViT): give them values, so
                # that the attention of every block shows in the features.
                for p in model.parameters():
                    if not p.any():
                        p.normal_(0, 0.5)
                x = torch.randn(1, 3, 64, 64)
                models[family] = (model, x, model.forward_features(x))
    finally:
        if saved is not None:
            os.environ[za.ENV_VAR] = saved
    return models


def _fallbacks_expected(family: str, backend: str) -> set[str]:
    available = set(za.available_backends())
    return {op for op in FAMILY_OPS[family] if backend not in IMPLEMENTED[op] or backend not in available
            } | REFUSED.get((family, backend), set())


def _run_twice(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[list[str]]]:
    messages = []
    out = None
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter('always')
            out = model.forward_features(x)
        fallbacks = [w for w in caught if issubclass(w.category, za.BackendFallbackWarning)]
        messages.append([str(w.message) for w in fallbacks])
    return out, messages


@pytest.mark.parametrize('how', ['env', 'context'])
@pytest.mark.parametrize('backend', za.BACKENDS)
@pytest.mark.parametrize('family', list_families())
def test_a_global_setting_never_breaks_a_model(family, backend, how, family_models, monkeypatch) -> None:
    model, x, expected = family_models[family]
    if how == 'env':
        monkeypatch.setenv(za.ENV_VAR, backend)
        out, messages = _run_twice(model, x)
    else:
        with za.use_backend(backend):
            out, messages = _run_twice(model, x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    first, second = messages
    assert second == [], 'the fallback warnings must be shown once'
    warned_ops = [next(op for op in IMPLEMENTED if f'for {op} ' in m) for m in first]
    assert sorted(warned_ops) == sorted(_fallbacks_expected(family, backend))  # each op once
    source = f'${za.ENV_VAR}' if how == 'env' else 'use_backend()'
    for message, op in zip(first, warned_ops, strict=True):
        assert message.startswith(f"zoo.attention: {source} prefers backend '{backend}'")
        assert ('does not implement' in message) == (backend not in IMPLEMENTED[op]), message
        assert 'only an op\'s backend= argument is strict' in message


def test_ravlt_under_sdpa_names_why() -> None:
    """The case of the issue: $ZOO_ATTENTION_BACKEND=sdpa made every RAVLT model raise."""
    model = timm.create_model('ravlt_tiny').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        os.environ[za.ENV_VAR] = 'sdpa'
        try:
            with pytest.warns(za.BackendFallbackWarning) as record:
                out = model(x)
        finally:
            del os.environ[za.ENV_VAR]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    (message,) = [str(w.message) for w in record]
    assert ("prefers backend 'sdpa', but for linear_attention 'sdpa' does not implement linear_attention "
            "(the backends that do: 'reference' (alias 'math')); linear_attention runs on 'reference' instead"
            ) in message


@pytest.mark.skipif('natten' not in za.available_backends(), reason='NATTEN is not installed')
def test_natten_serves_litv2_windows(family_models, monkeypatch) -> None:
    """LITv2's hi-fi windows (no bias) run on NATTEN in eval mode: no fallback warning for them,
    the same features; its dense lo-fi attention falls back to sdpa, as it must."""
    model, x, expected = family_models['litv2']
    monkeypatch.setenv(za.ENV_VAR, 'natten')
    with za.record_ops() as calls, warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter('always')
        out = model.forward_features(x)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert {backend for op, backend in calls if op == 'window_attention'} == {'natten'}
    warned = [str(w.message) for w in caught if issubclass(w.category, za.BackendFallbackWarning)]
    assert not [m for m in warned if 'for window_attention' in m]
    assert [m for m in warned if 'for dense_attention' in m]


@pytest.mark.skipif('natten' not in za.available_backends(), reason='NATTEN is not installed')
def test_a_backend_refusing_the_arguments_hands_the_call_on() -> None:
    """NATTEN runs grouped attention here but has no bias: under a preference the call runs on
    the default (the next listed backend); with backend= it raises."""
    torch.manual_seed(0)
    q, bias = torch.randn(1, 2, 8, 8, 8), torch.randn(2, 4, 4)
    expected = za.grouped_attention(q, q, q, 2, interval=2, attn_bias=bias, backend='sdpa')
    with torch.no_grad():
        with za.use_backend('natten'), pytest.warns(
            za.BackendFallbackWarning, match="'natten' cannot apply an attention bias.*runs on 'sdpa' instead"
        ):
            out = za.grouped_attention(q, q, q, 2, interval=2, attn_bias=bias)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        with pytest.raises(za.BackendNotSupported, match="'natten' backend cannot apply an attention bias"):
            za.grouped_attention(q, q, q, 2, interval=2, attn_bias=bias, backend='natten')
        with za.use_backend('natten, reference'), warnings.catch_warnings():
            warnings.simplefilter('ignore', za.BackendFallbackWarning)
            reference = za.grouped_attention(q, q, q, 2, interval=2, attn_bias=bias)  # the next listed backend
        torch.testing.assert_close(
            reference, za.grouped_attention(q, q, q, 2, interval=2, attn_bias=bias, backend='math'))


def _calls() -> dict[str, Callable[[str], torch.Tensor]]:
    """One valid call of every op, with the backend as argument."""
    from zoo.attention import causal_post_softmax_attention, halo_attention

    q4, q5 = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 4, 4, 8)
    qr, index = q4.unflatten(2, (4, 4)), torch.tensor([[[0, 1], [1, 2], [3, 2], [0, 3]]])
    return {
        'dense_attention': lambda b: za.dense_attention(q4, q4, q4, backend=b),
        'window_attention': lambda b: za.window_attention(q5, q5, q5, 2, backend=b),
        'grouped_attention': lambda b: za.grouped_attention(q5, q5, q5, 2, backend=b),
        'routed_attention': lambda b: za.routed_attention(qr, qr, qr, index, backend=b),
        'linear_attention': lambda b: za.linear_attention(q4.relu(), q4.relu(), q4, backend=b),
        'halo_attention': lambda b: halo_attention(q5, q5, q5, 2, 1, backend=b),
        'causal_post_softmax_attention': lambda b: causal_post_softmax_attention(q4, q4, q4, backend=b),
        'gather_attention': lambda b: za.gather_attention(q4, q4, q4, backend=b),
        'infuse_attention': lambda b: za.infuse_attention(q4, q4, backend=b),
    }


@pytest.mark.parametrize('op', list(IMPLEMENTED))
def test_the_backend_argument_stays_strict(op: str) -> None:
    """Even inside a preference that would fall back, backend= raises when it cannot run."""
    call = _calls()[op]
    available = set(za.available_backends())
    with za.use_backend('reference'), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('error', za.BackendFallbackWarning)  # the strict path never falls back
        for backend in za.BACKENDS:
            if backend not in IMPLEMENTED[op]:
                with pytest.raises(za.BackendNotSupported, match=(
                    f"{op} is not implemented by backend '{backend}' \\(from the backend= argument\\); "
                    'the backends that implement it: '
                )):
                    call(backend)
            elif backend not in available:
                with pytest.raises(za.BackendUnavailable, match=f"{op}: the '{backend}' backend needs"):
                    call(backend)
            else:
                call(backend)


# the whole command on every family: in the slow suite, which CI runs
@pytest.mark.slow
def test_backends_command_on_this_machine() -> None:
    env = {k: v for k, v in os.environ.items() if k not in (za.ENV_VAR, 'TRITON_INTERPRET')}
    result = subprocess.run(
        [sys.executable, '-m', 'zoo', 'backends'], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    has_cuda = torch.cuda.is_available()
    ops_part, families_part = text.split('\nPer family')
    table: dict[str, dict[str, str]] = {}  # op -> backend -> its row
    for line in ops_part.splitlines():
        header = re.fullmatch(r'  (\w+) \(default: \w+\)', line)
        if header:
            op = header.group(1)
            table[op] = {}
        elif line.startswith('    '):
            backend, row = line.split(None, 1)
            table[op][backend] = row
    assert set(table) == set(IMPLEMENTED)
    for op, rows in table.items():
        assert list(rows) == list(za.BACKENDS)
        for backend, row in rows.items():
            if backend not in IMPLEMENTED[op]:
                assert row == f'no: cannot compute this pattern (it has no {op} path)'
            elif backend in ('reference', 'sdpa'):
                assert row.startswith('runs')
        assert rows['sdpa' if 'sdpa' in IMPLEMENTED[op] else 'reference'].startswith('runs (default)')
    # The optional packages, as they are on this machine.
    installed = {name: _backends._import_problem(module, name, '', name) is None
                 for name, module in (('natten', 'natten.functional'), ('xformers', 'xformers.ops'))}
    natten_row = table['window_attention']['natten']
    assert natten_row.startswith('runs; limits: no attention bias') if installed['natten'] else 'not installed' in natten_row
    xformers_row = table['dense_attention']['xformers']
    if not installed['xformers']:
        assert xformers_row == "no: needs xFormers, which is not installed: pip install 'zoo[xformers]'"
    elif not has_cuda:
        assert xformers_row == 'no: needs a CUDA device and this machine has none'
    if not has_cuda:
        triton_row = table['routed_attention']['triton']
        assert 'needs a CUDA device and this machine has none; set TRITON_INTERPRET=1' in triton_row \
            or 'not installed' in triton_row
    # Per family: its smallest model, its ops, and what each setting runs them on.
    assert 'ravlt (ravlt_tiny): dense_attention (default: sdpa), linear_attention (default: reference)' \
        in families_part
    assert ('    sdpa       runs dense_attention; falls back: linear_attention -> reference '
            '(cannot compute this pattern)') in families_part
    for family, ops in FAMILY_OPS.items():
        header = next(line for line in families_part.splitlines() if line.startswith(f'  {family} ('))
        if not ops:
            assert 'no zoo.attention op' in header
        else:
            assert sorted(op.split(' (')[0] for op in header.split(': ', 1)[1].split(', ')) == sorted(ops)
    # NATTEN serves LITv2's windows (and, within its limits, grouped attention): five families
    # remain with no NATTEN pattern.
    assert families_part.count('    natten     runs none of them; falls back:') == (5 if installed['natten'] else 7)
    if installed['natten']:
        assert '    natten     runs window_attention; falls back: dense_attention -> sdpa' in families_part

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


class FakeLowerTriangularMask:
    """Stand-in for ``xformers.ops.LowerTriangularMask``: causal, top-left aligned."""

    def materialize(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = 'cpu') -> torch.Tensor:
        allowed = torch.ones(shape[-2:], dtype=torch.bool, device=device).tril()
        return torch.zeros(shape[-2:], dtype=dtype, device=device).masked_fill(~allowed, float('-inf'))


class FakeBlockDiagonalMask:
    """Stand-in for ``xformers.ops.fmha.attn_bias.BlockDiagonalMask``: the sequences of a batch
    of one laid end to end, each attending only to itself (xFormers' documented semantics)."""

    def __init__(self, seqlens: list[int]) -> None:
        self.seqlens = list(seqlens)

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None) -> 'FakeBlockDiagonalMask':
        assert kv_seqlen is None or list(kv_seqlen) == list(q_seqlen)
        return cls(q_seqlen)

    def materialize(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                    device: torch.device | str = 'cpu') -> torch.Tensor:
        ids = torch.repeat_interleave(torch.arange(len(self.seqlens)), torch.tensor(self.seqlens)).to(device)
        assert shape[-2:] == (len(ids), len(ids)), (shape, sum(self.seqlens))
        same = ids[:, None] == ids[None, :]
        return torch.zeros(shape[-2:], dtype=dtype, device=device).masked_fill(~same, float('-inf'))


def install_fake_xformers(monkeypatch) -> list[dict]:
    """Install a stand-in ``xformers`` whose ``memory_efficient_attention`` computes attention on
    xFormers' (B, N, heads, d) layout in plain torch, following its documented conventions (a
    mask object is materialised; a tensor bias is (B, heads, Nq, Nk) with rows aligned to 8
    elements; a BlockDiagonalMask needs a batch of one). Returns the log of its calls."""
    import sys
    import types
    calls: list[dict] = []

    def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None):
        calls.append({'shape': tuple(query.shape), 'attn_bias': attn_bias, 'p': p})
        assert query.dim() == key.dim() == value.dim() == 4
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))
        logits = (q @ k.transpose(-2, -1)) * scale
        if isinstance(attn_bias, FakeBlockDiagonalMask):
            assert query.shape[0] == 1, 'BlockDiagonalMask takes a batch of one'
        if isinstance(attn_bias, (FakeLowerTriangularMask, FakeBlockDiagonalMask)):
            logits = logits + attn_bias.materialize(logits.shape, logits.dtype, logits.device)
        elif attn_bias is not None:
            assert attn_bias.shape == logits.shape and attn_bias.stride(-2) % 8 == 0
            logits = logits + attn_bias
        return (logits.softmax(-1) @ v).transpose(1, 2)

    attn_bias_module = types.ModuleType('xformers.ops.fmha.attn_bias')
    attn_bias_module.BlockDiagonalMask = FakeBlockDiagonalMask
    attn_bias_module.LowerTriangularMask = FakeLowerTriangularMask
    fmha = types.ModuleType('xformers.ops.fmha')
    fmha.attn_bias = attn_bias_module
    ops = types.ModuleType('xformers.ops')
    ops.memory_efficient_attention = memory_efficient_attention
    ops.LowerTriangularMask = FakeLowerTriangularMask
    ops.fmha = fmha
    package = types.ModuleType('xformers')
    package.ops = ops
    for name, module in (('xformers', package), ('xformers.ops', ops), ('xformers.ops.fmha', fmha),
                         ('xformers.ops.fmha.attn_bias', attn_bias_module)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls

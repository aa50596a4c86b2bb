"""Kernel regression check: each family's smallest model still runs its fast kernels.

Wall time on a shared CI machine is noise; which operators run is not. For the smallest model
of every family, one eval forward at a tiny size is profiled (``zoo.profiling.kernels_used``)
and compared with ``tests/data/expected_kernels.json``: the fused kernels the family relies on
must appear (SDPA's flash kernel for attention, oneDNN convolutions), and the fallbacks that
signal a slow path must not.
"""
from __future__ import annotations

import json

import pytest
import timm
import torch

from zoo.attention import use_backend
from zoo.profiling import kernels_used
from zoo.registry import list_families, smallest_variant
from zoo_testutils import DATA

EXPECTED = {k: v for k, v in json.loads((DATA / 'expected_kernels.json').read_text()).items()
            if not k.startswith('_')}
FAMILIES = list_families()
SDPA_KERNEL = 'aten::_scaled_dot_product_flash_attention_for_cpu'


def _kernels(family: str, backend: str | None = None) -> set[str]:
    spec = EXPECTED[family]
    torch.manual_seed(0)
    model = timm.create_model(smallest_variant(family)).eval()
    x = torch.randn(1, 3, *spec['size'])
    with use_backend(backend):
        return kernels_used(model, x)


def test_every_family_has_expectations():
    missing = sorted(set(FAMILIES) - set(EXPECTED))
    assert not missing, f'add the kernels of {missing} to tests/data/expected_kernels.json'


@pytest.mark.parametrize('family', FAMILIES)
def test_fast_kernels_are_used(family):
    if family not in EXPECTED:
        pytest.fail(f'no kernel expectations for {family}')
    spec = EXPECTED[family]
    used = _kernels(family)
    missing = [k for k in spec['require'] if k not in used]
    assert not missing, f'{smallest_variant(family)} no longer runs {missing}'
    slow = [k for k in spec['forbid'] if k in used]
    assert not slow, f'{smallest_variant(family)} now runs slow-path operators {slow}'


@pytest.mark.parametrize('family', [f for f in FAMILIES if SDPA_KERNEL in EXPECTED.get(f, {}).get('require', [])
                                    and EXPECTED[f].get('zoo_attention', True)])
def test_the_check_sees_a_fallback_to_reference_attention(family):
    # The same model forced onto the reference backend must fail the check above: otherwise the
    # expectation would not detect the regression it exists for.
    used = _kernels(family, backend='reference')
    assert SDPA_KERNEL not in used
    if EXPECTED[family]['forbid']:
        assert any(k in used for k in EXPECTED[family]['forbid']), 'the forbid list misses the math path'

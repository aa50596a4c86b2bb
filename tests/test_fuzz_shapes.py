"""Property-based fuzzing of input shapes: the right output shape or the documented error."""
from __future__ import annotations

from functools import lru_cache

import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from zoo.layers import InputError
from zoo.registry import list_families, smallest_variant


@lru_cache(maxsize=None)
def _model(name: str, in_chans: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, in_chans=in_chans, num_classes=11).eval()


@pytest.mark.parametrize('family', list_families())
def test_any_shape_gives_output_or_clear_error(family):
    name = smallest_variant(family)

    @settings(max_examples=20, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(batch=st.integers(1, 3), in_chans=st.integers(1, 4),
           h=st.integers(1, 512), w=st.integers(1, 512))
    def check(batch, in_chans, h, w):
        model = _model(name, in_chans)
        x = torch.randn(batch, in_chans, h, w)
        if min(h, w) < model.min_input_size:
            with pytest.raises(InputError, match=f'at least {model.min_input_size}x{model.min_input_size}'):
                model(x)
            return
        with torch.no_grad():
            out = model(x)
        assert out.shape == (batch, 11)
        assert torch.isfinite(out).all()

    check()

"""Input checks: the finiteness check's device policy (no host-device synchronisation unless
asked for) and empty batches in every family."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch

from zoo.attention import routed_attention
from zoo.layers import InputError, validate_input
from zoo.layers.input_check import check_finite
from zoo_testutils import model_params


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that says it is on a GPU and records every read of its values on the host.

    ``__torch_function__`` is disabled, so operations on it return plain CPU tensors: only the
    model's first look at its input (the input check) sees the GPU device.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl
    host_reads: list[str]

    @property
    def device(self) -> torch.device:
        return torch.device('cuda', 0)

    def __bool__(self) -> bool:
        self.host_reads.append('bool')
        return super().__bool__()

    def item(self):
        self.host_reads.append('item')
        return super().item()


def _fake_cuda(x: torch.Tensor) -> FakeCudaTensor:
    fake = x.as_subclass(FakeCudaTensor)
    fake.host_reads = []
    return fake


def _nan_images(batch: int = 1, size: int = 64) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size)
    x[0, 1, 5, 7] = float('nan')
    return x


# ---------------------------------------------------------------- finiteness policy

@pytest.mark.parametrize('setting, cpu, gpu', [
    (None, True, False), ('', True, False), ('auto', True, False), ('AUTO', True, False),
    ('1', True, True), ('0', False, False),
])
def test_finite_check_runs_where_the_setting_says(monkeypatch, setting, cpu, gpu):
    if setting is None:
        monkeypatch.delenv('ZOO_CHECK_FINITE', raising=False)
    else:
        monkeypatch.setenv('ZOO_CHECK_FINITE', setting)
    assert check_finite(torch.zeros(1)) is cpu
    assert check_finite(_fake_cuda(torch.zeros(1))) is gpu
    assert check_finite(torch.empty(1, device='meta')) is False  # no values to read


def test_unknown_setting_warns_once_and_means_auto(monkeypatch):
    monkeypatch.setenv('ZOO_CHECK_FINITE', 'yes-please')
    with pytest.warns(UserWarning, match="ZOO_CHECK_FINITE='yes-please'.*using auto"):
        assert check_finite(torch.zeros(1)) and not check_finite(_fake_cuda(torch.zeros(1)))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_finite(torch.zeros(1))


def test_gpu_input_is_not_read_on_the_host_by_default(monkeypatch):
    monkeypatch.delenv('ZOO_CHECK_FINITE', raising=False)
    x = _fake_cuda(_nan_images())
    validate_input(x, in_chans=3, min_size=32, weight_dtype=torch.float32)  # NaN passes unseen
    assert x.host_reads == []
    with pytest.raises(InputError, match='NaN'):  # the same values on CPU are refused
        validate_input(_nan_images(), in_chans=3, min_size=32, weight_dtype=torch.float32)


def test_gpu_input_is_checked_on_request(monkeypatch):
    monkeypatch.setenv('ZOO_CHECK_FINITE', '1')
    with pytest.raises(InputError, match='NaN or infinite'):
        validate_input(_fake_cuda(_nan_images()), in_chans=3, min_size=32, weight_dtype=torch.float32)


def test_shape_checks_still_run_on_gpu_inputs(monkeypatch):
    monkeypatch.delenv('ZOO_CHECK_FINITE', raising=False)
    with pytest.raises(InputError, match='input channels'):
        validate_input(_fake_cuda(torch.zeros(1, 4, 64, 64)), in_chans=3, min_size=32)
    with pytest.raises(InputError, match='at least 32x32'):
        validate_input(_fake_cuda(torch.zeros(1, 3, 31, 64)), in_chans=3, min_size=32)


@pytest.mark.parametrize('name', model_params())
def test_every_model_skips_the_finite_check_on_gpu_inputs(monkeypatch, name):
    # Each family's forward reaches the shared policy: a GPU input is not read on the host
    # (the NaN reaches the output), and ZOO_CHECK_FINITE=1 still refuses it.
    model = timm.create_model(name).eval()
    monkeypatch.delenv('ZOO_CHECK_FINITE', raising=False)
    x = _fake_cuda(_nan_images())
    with torch.no_grad():
        out = model(x)
    assert x.host_reads == [] and torch.isnan(out).any()
    monkeypatch.setenv('ZOO_CHECK_FINITE', '1')
    with pytest.raises(InputError, match='NaN'):
        model(_fake_cuda(_nan_images()))


def test_routed_attention_still_checks_cpu_indices():
    q = k = v = torch.randn(1, 2, 4, 3, 8)
    with pytest.raises(ValueError, match=r'must be in \[0, R\)'):
        routed_attention(q, k, v, torch.full((1, 4, 2), 4))


def test_routed_attention_takes_an_empty_batch():
    q = k = v = torch.randn(0, 2, 4, 3, 8)
    assert routed_attention(q, k, v, torch.zeros(0, 4, 2, dtype=torch.long)).shape == (0, 2, 4, 3, 8)


# ---------------------------------------------------------------- batch of 0 images

def _shapes(out) -> list[tuple[int, ...]]:
    """Shapes of a tensor, or of the tensors in nested lists/tuples, in order."""
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    return [s for o in out for s in _shapes(o)]


def _empty_like_batch_one(one) -> list[tuple[int, ...]]:
    return [(0,) + s[1:] for s in _shapes(one)]


@pytest.mark.parametrize('name', model_params())
def test_empty_batch_gives_empty_outputs(name):
    # The expected shapes are those of a batch of one, with 0 images.
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7).eval()
    one, empty = torch.randn(1, 3, 97, 131), torch.randn(0, 3, 97, 131)
    with torch.no_grad():
        assert model(empty).shape == (0, 7)
        assert _shapes(model.forward_features(empty)) == _empty_like_batch_one(model.forward_features(one))
        assert (_shapes(model.forward_intermediates(empty))
                == _empty_like_batch_one(model.forward_intermediates(one)))
        nhwc = model.forward_intermediates(empty, indices=2, output_fmt='NHWC', intermediates_only=True)
        assert _shapes(nhwc) == _empty_like_batch_one(
            model.forward_intermediates(one, indices=2, output_fmt='NHWC', intermediates_only=True))
    features = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        maps = features(empty)
        assert _shapes(maps) == _empty_like_batch_one(features(one))
    assert len(maps) == len(features.feature_info) and all(m.shape[1] > 0 for m in maps)


@pytest.mark.parametrize('name', model_params())
def test_empty_batch_trains_without_effect(name):
    # An empty batch from a training loader: the loss backpropagates, every gradient is zero
    # and no running statistic (BatchNorm) moves.
    torch.manual_seed(0)
    model = timm.create_model(name).train()
    buffers = {n: b.clone() for n, b in model.named_buffers() if b.is_floating_point()}
    out = model(torch.randn(0, 3, 64, 64))
    assert out.shape == (0, model.num_classes)
    out.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    for n, b in model.named_buffers():
        if n in buffers:
            assert torch.equal(b, buffers[n]), n


def test_halonet_eca_gate_equals_timms():
    # The ECA gate that eca_halonext26ts swaps in for timm's (to take empty batches) computes
    # timm's output, with and without timm's optional second conv.
    from timm.layers.eca import EcaModule

    from backbones.halonet import EcaAttention
    x = torch.randn(2, 64, 5, 7)
    for kwargs in (dict(channels=64), dict(channels=64, use_mlp=True)):
        torch.manual_seed(0)
        timm_gate = EcaModule(**kwargs)
        ours = EcaModule(**kwargs)
        ours.load_state_dict(timm_gate.state_dict())
        ours.__class__ = EcaAttention
        assert torch.allclose(ours(x), timm_gate(x), atol=1e-6)
        assert ours(x[:0]).shape == (0, 64, 5, 7)

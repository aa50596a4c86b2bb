"""Official checkpoints give the official outputs (the team's parity fixtures).

Each fixture holds an official-format checkpoint layout with deterministic weights and the
logits the official implementation computed with them; the model must load the file through
its ``checkpoint_filter_fn`` (strictly) and reproduce the logits within 1e-4 relative error.
"""
from __future__ import annotations

import pytest
import timm
import torch

from zoo.registry import list_models
from zoo_testutils import parity_checkpoint, parity_fixture, parity_fixture_names, parity_input, rel_err

FIXTURES = [n for n in parity_fixture_names() if n in list_models()]


@pytest.fixture(scope='module')
def checkpoint_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('parity')


@pytest.mark.parametrize('name', FIXTURES)
def test_official_logits(name, checkpoint_dir):
    fx = parity_fixture(name)
    path = parity_checkpoint(name, checkpoint_dir / f'{name}.pth')
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **fx.get('constructor_kwargs', {})).eval()
    assert sum(p.numel() for p in model.parameters()) == fx['param_count']
    cases = [('input', 'expected_logits')] + ([('alt_input', 'alt_expected_logits')] if 'alt_input' in fx else [])
    for which, expected in cases:
        with torch.no_grad():
            y = model(parity_input(name, which))
        err = rel_err(y, torch.tensor(fx[expected]))
        assert err <= fx['tolerance']['max_abs_diff_over_max_abs_ref'], f'{which}: relative error {err:.2e}'


@pytest.mark.parametrize('name', FIXTURES)
def test_official_checkpoint_loads_for_features_and_new_heads(name, checkpoint_dir):
    path = str(parity_checkpoint(name, checkpoint_dir / f'{name}_b.pth'))
    ref = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    x = parity_input(name)[:1]
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        feats = timm.create_model(name, pretrained=True, features_only=True,
                                  pretrained_cfg_overlay=dict(file=path)).eval()(x)
        assert all(torch.equal(a, b) for a, b in zip(feats, expected))
        # a new head keeps the pretrained body: pre-logits are unchanged
        new_head = timm.create_model(name, pretrained=True, num_classes=10,
                                     pretrained_cfg_overlay=dict(file=path)).eval()
        assert new_head(x).shape == (1, 10)
        assert torch.allclose(new_head.forward_head(new_head.forward_features(x), pre_logits=True),
                              ref.forward_head(ref.forward_features(x), pre_logits=True))
        # in_chans=1 sums the pretrained stem over RGB: a grey image gives the RGB model's output
        grey = timm.create_model(name, pretrained=True, in_chans=1,
                                 pretrained_cfg_overlay=dict(file=path)).eval()
        g = x[:, :1]
        # (relative to the logits' scale: the fixtures' weights give logits up to ~1e3)
        assert rel_err(grey(g), ref(g.expand(-1, 3, -1, -1))) <= 1e-5

"""DaViT: timm's model under the zoo's names, with official files and the zoo's contract."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg, model_entrypoint

from zoo.registry import pretrained_tags
from zoo_testutils import parity_checkpoint, parity_fixture, parity_input, rel_err


def test_names_are_taken_over_from_timm():
    for name in ('davit_tiny', 'davit_small', 'davit_base'):
        assert model_entrypoint(name).__module__ == 'backbones.davit'
        # timm's tag stays the default with timm's values (tests/test_timm_compat.py); ours beside it
        assert pretrained_tags(name) == ['msft_in1k', 'official_in1k']
        assert get_pretrained_cfg(name).crop_pct == get_pretrained_cfg(f'{name}.msft_in1k').crop_pct == 0.95
        cfg = get_pretrained_cfg(f'{name}.official_in1k')
        # the official host has no direct download: timm's copy of the official weights
        assert (cfg.hf_hub_id, cfg.hf_hub_filename) == (f'timm/{name}.msft_in1k', 'model.safetensors')
        assert cfg.crop_pct == 0.9  # the official validate.py: the model's default cfg
    # timm's other DaViT entries stay timm's
    assert model_entrypoint('davit_large').__module__ == 'timm.models.davit'


def test_official_file_without_wrapper_loads(tmp_path):
    # The official files wrap the weights in 'state_dict'; a bare state dict loads too.
    path = parity_checkpoint('davit_tiny', tmp_path / 'official.pth')
    torch.save(torch.load(path)['state_dict'], tmp_path / 'bare.pth')
    model = timm.create_model('davit_tiny', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'bare.pth')))
    with torch.no_grad():
        y = model.eval()(parity_input('davit_tiny', 'alt_input'))
    assert rel_err(y, torch.tensor(parity_fixture('davit_tiny')['alt_expected_logits'])) <= 1e-4


@pytest.mark.slow  # ~30 s on a loaded 2-core machine
def test_intermediates_with_grad_checkpointing_give_the_same_gradients():
    x = torch.randn(1, 3, 32, 64)
    grads = []
    for enable in (False, True):
        torch.manual_seed(0)
        model = timm.create_model('davit_tiny', num_classes=0).train()
        model.set_grad_checkpointing(enable)
        feats = model.forward_intermediates(x, intermediates_only=True)
        sum(f.square().mean() for f in feats).backward()
        grads.append([p.grad for p in model.parameters()])
    assert [g is None for g in grads[0]] == [g is None for g in grads[1]]
    assert sum(g is not None for g in grads[0]) > 100  # every stage (the head is unused)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(*grads) if a is not None)


def test_odd_sizes_pad_windows_inside():
    # 97x131: the stem pads to a multiple of 4, the downsamplings to even sizes, the window
    # attention to multiples of 7; the features keep ceil(n / stride).
    model = timm.create_model('davit_tiny', features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 33), (13, 17), (7, 9), (4, 5)]

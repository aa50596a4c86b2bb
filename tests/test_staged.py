"""zoo.staged.StagedModel on a toy two-stage model: the shared timm API with NCHW and NHWC stages."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from zoo.layers import InputError
from zoo.staged import StagedModel


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int, nhwc: bool):
        super().__init__()
        self.grad_checkpointing = False
        self.nhwc = nhwc
        self.downsample = nn.Conv2d(cin, cout, 2, stride=2)
        self.blocks = nn.Sequential(nn.Conv2d(cout, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        x = self.blocks(self.downsample(x))
        return x.permute(0, 2, 3, 1) if self.nhwc else x


class _Toy(StagedModel):
    head_modules = ('norm',)
    group_matcher_stem = r'^stem'

    def __init__(self, nhwc: bool):
        super().__init__()
        self.stage_layout = 'NHWC' if nhwc else 'NCHW'
        self.in_chans, self.min_input_size, self.num_classes = 3, 8, 5
        self.global_pool, self.head_hidden_size = 'avg', 8
        self.stem = nn.Conv2d(3, 4, 1)
        self.stages = nn.Sequential(_Stage(4, 6, nhwc), _Stage(6, 8, nhwc))
        self.feature_info = [dict(num_chs=6, reduction=2, module='stages.0'), dict(num_chs=8, reduction=4, module='stages.1')]
        self.norm = nn.BatchNorm2d(8)
        self.head_drop = nn.Identity()
        self.head = nn.Linear(8, 5)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return x.permute(0, 2, 3, 1) if self.stage_layout == 'NHWC' else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.norm(x).mean((2, 3)))
        return x if pre_logits else self.head(x)


@pytest.mark.parametrize('nhwc', [False, True])
def test_staged_model_api(nhwc: bool) -> None:
    torch.manual_seed(0)
    model = _Toy(nhwc).eval()
    x = torch.randn(2, 3, 16, 12)
    stem = model.stem(x)
    s0 = model.stages[0].blocks(model.stages[0].downsample(stem))  # by hand, NCHW
    s1 = model.stages[1].blocks(model.stages[1].downsample(s0))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), s1)
        final, feats = model.forward_intermediates(x, indices=[0, 1])
        torch.testing.assert_close(final, s1)
        torch.testing.assert_close(feats[0], s0)
        nhwc_feats = model.forward_intermediates(x, indices=1, output_fmt='NHWC', intermediates_only=True)
        torch.testing.assert_close(nhwc_feats[0], s1.permute(0, 2, 3, 1))
        assert model(x).shape == (2, 5)
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NCL')
    with pytest.raises(InputError, match='at least 8x8'):
        model(torch.randn(1, 3, 4, 16))

    groups = model.group_matcher()
    assert groups['stem'] == r'^stem' and model.group_matcher(coarse=True)['blocks'] == r'^stages\.(\d+)'
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)

    model.reset_classifier(3, '')
    assert model.get_classifier().out_features == 3 and model.global_pool == ''
    with pytest.raises(ValueError, match="global_pool must be 'avg' or ''"):
        model.reset_classifier(3, 'max')

    assert model.prune_intermediate_layers(indices=[0]) == [0]
    assert len(model.stages) == 1 and isinstance(model.norm, nn.Identity)
    assert isinstance(model.head, nn.Identity) and model.num_classes == 0

"""zoo.staged.StagedModel on a toy two-stage model: the shared timm API with NCHW and NHWC stages."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from zoo.layers import InputError
from zoo.staged import FeatureIntermediates, Stage, StagedModel


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


class _Scale(nn.Module):
    """A block that records its stochastic depth rate and multiplies by per-row/column tables."""

    def __init__(self, dim: int, drop_path: float):
        super().__init__()
        self.drop_path = drop_path
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, *tables: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for t in tables:
            x = x * t
        return x


class _Tables(nn.Module):
    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(height).view(-1, 1) + 1., torch.arange(width).view(1, -1) + 2.


@pytest.mark.parametrize('rope', [False, True])
def test_stage_runs_downsample_blocks_norm(rope: bool) -> None:
    torch.manual_seed(0)
    stage = Stage(3, lambda j, dp: _Scale(4, dp), drop_path=[0., .1, .2],
                  downsample=nn.Conv2d(2, 4, 2, stride=2), norm=nn.BatchNorm2d(4).eval(),
                  rope=_Tables() if rope else None)
    assert [b.drop_path for b in stage.blocks] == [0., .1, .2]
    keys = {k.split('.')[0] for k in stage.state_dict()}
    assert keys == {'downsample', 'blocks', 'norm'}  # the tables module holds no state here
    x = torch.randn(2, 2, 8, 6, requires_grad=True)
    # by hand
    y = stage.downsample(x)
    rows, cols = torch.arange(4.).view(-1, 1) + 1, torch.arange(3.).view(1, -1) + 2
    for block in stage.blocks:
        y = block.conv(y)
        if rope:
            y = y * rows * cols
    expected = stage.norm(y)
    out = stage(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    grad, = torch.autograd.grad(out.square().sum(), x)
    stage.grad_checkpointing = True
    out_ckpt = stage(x)
    torch.testing.assert_close(out_ckpt, expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(out_ckpt.square().sum(), x)[0], grad)


def test_stage_checks_drop_path_rates() -> None:
    assert [b.drop_path for b in Stage(2, lambda j, dp: _Scale(1, dp), drop_path=.3).blocks] == [.3, .3]
    with pytest.raises(ValueError, match=r'one rate per block \(3\), got 2'):
        Stage(3, lambda j, dp: _Scale(1, dp), drop_path=[0., .1])
    plain = Stage(1, lambda j, dp: _Scale(1, dp))
    assert isinstance(plain.downsample, nn.Identity) and isinstance(plain.norm, nn.Identity)


class _Tokens(FeatureIntermediates, nn.Module):
    """Blocks passing a (class token + patch tokens, grid) state, as the plain ViTs do."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 4, stride=4)
        self.stages = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def _forward_stem(self, x):
        x = self.embed(x)
        return torch.cat((torch.ones_like(x[:, :, :1, :1]).flatten(2), x.flatten(2)), 2).transpose(1, 2), x.shape[2:]

    def _forward_stage(self, index, stage, state):
        return stage(state[0]), state[1]

    def _intermediate(self, index, state, norm, output_fmt):
        y = state[0][:, 1:].reshape(state[0].shape[0], *state[1], -1)
        return y if output_fmt == 'NHWC' else y.permute(0, 3, 1, 2)

    def _forward_end(self, state, complete):
        return state[0] if complete else -state[0]


def test_feature_intermediates_hooks() -> None:
    torch.manual_seed(0)
    model = _Tokens()
    x = torch.randn(2, 3, 8, 12)
    seq = torch.cat((torch.ones(2, 4, 1), model.embed(x).flatten(2)), 2).transpose(1, 2)
    outs = []
    for block in model.stages:
        seq = block(seq)
        outs.append(seq[:, 1:].reshape(2, 2, 3, 4))
    final, feats = model.forward_intermediates(x, indices=[0, 2])
    torch.testing.assert_close(final, seq)
    torch.testing.assert_close(feats[0], outs[0].permute(0, 3, 1, 2))
    torch.testing.assert_close(feats[1], outs[2].permute(0, 3, 1, 2))
    early, feats = model.forward_intermediates(x, indices=[1], stop_early=True, output_fmt='NHWC')
    torch.testing.assert_close(feats[0], outs[1])
    # stopped after block 1: the last state run, marked incomplete by the hook
    ran_two = model.stages[1](model.stages[0](torch.cat((torch.ones(2, 4, 1), model.embed(x).flatten(2)), 2).transpose(1, 2)))
    torch.testing.assert_close(early, -ran_two)
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NLC')

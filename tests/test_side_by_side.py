"""tools/side_by_side.py and tools/_official_builders.py: the parts that need no official code."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from timm.layers import DropPath
from torch import nn

TOOLS = Path(__file__).resolve().parents[1] / 'tools'
sys.path.insert(0, str(TOOLS))

import _official_builders as ob  # noqa: E402
import side_by_side as sbs  # noqa: E402
from zoo.train_profiling import train_peak_memory  # noqa: E402


def tiny_classifier(width: int = 16) -> nn.Module:
    """A small classifier for the 'module:callable' children (same seed: identical models)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(width, 10))
    model.num_classes = 10
    return model


@pytest.mark.parametrize('argv, message', [
    (['--families', 'resnet'], "unknown families ['resnet']"),
    (['--steps', 'detector'], "--steps takes 'classifier' and/or 'dense'"),
    (['--batch-size', '0'], '--batch-size must be >= 1, got 0'),
    (['--warmup', '-1'], '--warmup must be >= 0'),
    (['--profile', '-2'], '--profile must be >= 0, got -2'),
])
def test_bad_arguments_are_refused_with_the_reason(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        sbs.parse_args(['--official-root', str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_missing_root_and_missing_checkout_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sbs.parse_args(['--official-root', str(tmp_path / 'nowhere')])
    assert 'is not a folder' in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"expected the folder 'RALA'.*qhfan/RALA.*a86314f"):
        ob.official_folder(tmp_path, 'ravlt')
    (tmp_path / 'RAVLT').mkdir()  # the alias is accepted
    assert ob.official_folder(tmp_path, 'ravlt') == tmp_path / 'RAVLT'
    with pytest.raises(ValueError, match="family must be one of"):
        ob.build('resnet', 'classifier', str(tmp_path))


def test_every_family_names_its_checkout_and_our_smallest_variant():
    import timm
    import zoo  # noqa: F401
    from zoo.registry import family_of
    assert set(ob.FAMILIES) == {'biformer', 'davit', 'litv2', 'van', 'crossformer', 'crossformer_pp', 'shvit',
                                'ravlt', 'illama'}
    for family, spec in ob.FAMILIES.items():
        assert timm.is_model(spec.ours), spec.ours
        assert family_of(spec.ours) == family.removesuffix('_pp')  # the card its entry lands on
        assert len(spec.commit) == 40 and spec.folder in sbs.__doc__ and spec.commit in sbs.__doc__, family


def test_hooked_stages_turn_stage_tokens_into_maps():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.stage1 = nn.Identity()
            self.stage2 = nn.Identity()

        def forward(self, x):  # stride-2 tokens plus a class token appended last, then stride 4
            t = torch.nn.functional.avg_pool2d(x, 2).flatten(2).transpose(1, 2)
            self.stage1(torch.cat([t, t.mean(1, keepdim=True)], 1))
            return self.stage2(torch.nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)).mean()

    model = Tokens()
    x = torch.randn(2, 3, 8, 12)
    maps = ob.HookedStages(model, [model.stage1], [2], drop_last_token=True)(x)
    torch.testing.assert_close(maps[0], torch.nn.functional.avg_pool2d(x, 2), rtol=0, atol=0)
    maps = ob.HookedStages(model, [model.stage2], [4])(x)
    torch.testing.assert_close(maps[0], torch.nn.functional.avg_pool2d(x, 4), rtol=0, atol=0)


def test_stochastic_layers_off_make_the_train_step_deterministic():
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), DropPath(0.5))
    ob.disable_stochastic_layers(model).train()
    x = torch.randn(64, 8)
    torch.testing.assert_close(model(x), model[0](x), rtol=0, atol=0)


def test_interleaved_speed_times_every_side_each_round():
    models = {'ours': tiny_classifier(), 'official': tiny_classifier()}
    out = sbs.interleaved_speed(models, 'classifier', torch.randn(2, 3, 16, 16), warmup=0, repeats=3, threads=1)
    assert set(out) == {'ours', 'official'}
    for side in out.values():
        assert len(side['samples']) == 3 and side['img_per_s'] == sorted(side['samples'])[1] > 0


# two fresh measuring processes per side: in the slow suite, which CI runs
@pytest.mark.slow
def test_identical_models_measure_identical_memory(monkeypatch):
    # the 'official' side is any importable 'module:callable', built in a fresh process
    monkeypatch.setenv('PYTHONPATH', str(Path(__file__).resolve().parent))
    peaks = [train_peak_memory('test_side_by_side:tiny_classifier', (4, 3, 96, 96), kind='classifier',
                               create_kwargs={'width': 64}, threads=1).peak_mb.median for _ in range(2)]
    smaller = train_peak_memory('test_side_by_side:tiny_classifier', (4, 3, 96, 96), kind='classifier',
                                create_kwargs={'width': 16}, threads=1).peak_mb.median
    assert peaks[0] == pytest.approx(peaks[1], rel=0.1, abs=0.5)
    assert smaller < 0.6 * peaks[0]  # a quarter of the activations


def test_norm_eval_keeps_our_batch_norms_frozen_through_train():
    # SHViT's official dense backbone trains with BatchNorms in eval mode (our configs:
    # norm_eval=True); the measured step must do the same on our side, after any train() call.
    assert ob.FAMILIES['shvit'].dense_norm_eval and not ob.FAMILIES['van'].dense_norm_eval
    model = sbs.build_ours('van_b0', 'dense', norm_eval=True)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and model.train() is model and model.training
    assert not any(bn.training for bn in batch_norms)
    before = batch_norms[0].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(batch_norms[0].running_mean, before)  # statistics untouched
    assert all(bn.training for bn in sbs.build_ours('van_b0', 'dense').modules() if isinstance(bn, nn.BatchNorm2d))


def test_operator_profile_counts_the_calls_of_each_side():
    # two Linear layers against one: twice the addmm calls (forward), same loss ops
    class Two(nn.Module):
        num_classes = 5

        def __init__(self, layers):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), *[nn.Linear(48, 48) for _ in range(layers - 1)], nn.Linear(48, 5))

        def forward(self, x):
            return self.body(x)

    out = sbs.operator_profile({'ours': Two(2), 'official': Two(1)}, 'classifier', torch.randn(4, 3, 4, 4),
                               threads=1, top=50)
    ops = {row['name']: row for row in out['operators']}
    assert ops['aten::addmm']['ours']['calls'] == 2 and ops['aten::addmm']['official']['calls'] == 1
    assert all(row['ours']['self_ms'] >= 0 and row['official']['self_ms'] >= 0 for row in out['operators'])
    assert set(out['total_self_ms']) == {'ours', 'official'} and out['total_self_ms']['ours'] > 0
    top2 = sbs.operator_profile({'ours': Two(2), 'official': Two(1)}, 'classifier', torch.randn(4, 3, 4, 4),
                                threads=1, top=2)
    assert len(top2['operators']) == 2

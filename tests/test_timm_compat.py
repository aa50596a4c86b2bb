"""``import zoo`` does not break timm: timm's names keep timm's tags and values, and timm's
usual constructor arguments work on every zoo model.

The zoo registers some families under timm's own names (``davit_*``, ``shvit_*``, the halo
models). timm code in the same process (also one that imports the zoo only through an mm
config's ``custom_imports``) must see no change: every tag timm has builds, with timm's
pretrained cfg field by field, and timm's weights give timm's outputs in our models.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import resolve_model_data_config
from timm.models import byoanet, davit, get_pretrained_cfg, model_entrypoint, shvit

import zoo.builder
from zoo.registry import model_info, pretrained_tags, replaced_timm_module, timm_tags
from zoo_testutils import SMALLEST

REPO = Path(__file__).resolve().parents[1]

# The names the zoo registers again, with the timm module that registers them first.
TIMM_NAMES = {
    'davit_tiny': davit, 'davit_small': davit, 'davit_base': davit,
    'shvit_s1': shvit, 'shvit_s2': shvit, 'shvit_s3': shvit, 'shvit_s4': shvit,
    'halonet26t': byoanet, 'sehalonet33ts': byoanet, 'halonet50ts': byoanet, 'eca_halonext26ts': byoanet,
}
# Our own tags under those names (beside timm's).
ZOO_TAGS = {name: ['official_in1k'] for name in TIMM_NAMES if name.startswith(('davit', 'shvit'))}
# timm names of the same modules that the zoo leaves alone, and unrelated ones, as controls.
CONTROLS = ['davit_large', 'davit_base_fl', 'halonet_h1', 'lambda_resnet26t', 'resnet18', 'vit_tiny_patch16_224']

# Runs in a fresh interpreter: the registry as timm users see it, before or after `import zoo`.
_SNAPSHOT = r'''
import json, sys, warnings
import torch, timm
from timm.models import get_pretrained_cfg
from timm.models._registry import _model_with_tags
if sys.argv[1] == 'zoo':
    import zoo
out = {}
for name in json.loads(sys.argv[2]):
    tags = list(_model_with_tags[name])
    built = {}
    for full in [name] + tags:
        with torch.device('meta'):  # no weights, no download: the cfg and the constructor only
            model = timm.create_model(full, pretrained=False)
        built[full] = model.pretrained_cfg
    out[name] = dict(tags=tags, cfgs={t: get_pretrained_cfg(t).to_dict() for t in [name] + tags}, built=built)
print(json.dumps(out, default=list))
'''


def _snapshot(with_zoo: bool, names: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, '-c', _SNAPSHOT, 'zoo' if with_zoo else 'timm', json.dumps(names)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope='module')
def snapshots() -> tuple[dict, dict]:
    names = [*TIMM_NAMES, *CONTROLS]
    return _snapshot(False, names), _snapshot(True, names)


def test_timm_tags_and_cfgs_survive_import_zoo(snapshots):
    before, after = snapshots
    for name in [*TIMM_NAMES, *CONTROLS]:
        theirs, ours = before[name], after[name]
        extra = [f'{name}.{t}' for t in ZOO_TAGS.get(name, [])]
        # timm's tags in timm's order, timm's default first; ours after them.
        assert ours['tags'] == theirs['tags'] + extra, name
        for full, cfg in theirs['cfgs'].items():
            for field in sorted(cfg.keys() | ours['cfgs'][full].keys()):
                assert ours['cfgs'][full].get(field) == cfg.get(field), (full, field)
            assert ours['built'][full] == theirs['built'][full], full


def test_timm_examples_from_the_issue(snapshots):
    before, after = snapshots
    for snap in (before, after):
        assert snap['davit_tiny']['cfgs']['davit_tiny.msft_in1k']['crop_pct'] == 0.95
        assert snap['shvit_s1']['cfgs']['shvit_s1.in1k']['hf_hub_id'] == 'timm/shvit_s1.in1k'


def test_zoo_tags_sit_beside_timms_and_say_where_their_values_come_from():
    for name, module in TIMM_NAMES.items():
        assert model_entrypoint(name).__module__.startswith('backbones.')
        assert replaced_timm_module(name) == module.__name__
        assert timm_tags(name) == list(module.default_cfgs[name].tags)
        assert pretrained_tags(name) == timm_tags(name) + ZOO_TAGS.get(name, [])
        assert get_pretrained_cfg(name).tag == timm_tags(name)[0]  # timm's default stays the default
        for tag in ZOO_TAGS.get(name, []):
            cfg = get_pretrained_cfg(f'{name}.{tag}')
            notes = ' '.join(cfg.notes or ())
            # each value that differs from timm's default tag is explained
            for field in ('url', 'hf_hub_id', 'crop_pct', 'license'):
                if getattr(cfg, field) and getattr(cfg, field) != getattr(get_pretrained_cfg(name), field):
                    assert f'{field}:' in notes, (name, tag, field, notes)
    for name in CONTROLS:
        assert not model_entrypoint(name).__module__.startswith('backbones.')
        assert replaced_timm_module(name) is None


def test_zoo_info_states_the_replacement(capsys):
    from zoo.__main__ import main
    assert main(['info', 'davit_tiny']) == 0
    out = capsys.readouterr().out
    assert 'timm.models.davit' in out and 'msft_in1k' in out and 'official_in1k' in out
    assert model_info('davit_tiny', with_flops=False).replaces == 'timm.models.davit'
    assert main(['info', 'van_b0']) == 0
    assert 'timm.models' not in capsys.readouterr().out


@pytest.mark.parametrize('name, tag, size', [
    ('davit_tiny', 'msft_in1k', 224),
    ('shvit_s1', 'in1k', 224),
    ('eca_halonext26ts', 'c1_in1k', 256),
])
def test_timm_weights_give_timms_outputs(name, tag, size, tmp_path):
    # timm's hub files are in timm's layout: a file written by timm's own model loads through
    # our filter into our model (pretrained=True with the timm tag) and gives timm's logits.
    torch.manual_seed(0)
    reference = getattr(TIMM_NAMES[name], name)(pretrained=False).eval()  # timm's entrypoint
    assert type(reference).__module__.startswith('timm.')
    with torch.no_grad():  # non-trivial norm statistics
        for key, buffer in reference.named_buffers():
            if key.endswith('running_var'):
                buffer.uniform_(0.5, 1.5)
            elif key.endswith('running_mean'):
                buffer.normal_(0, 0.1)
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = timm.create_model(f'{name}.{tag}', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert type(model).__module__.startswith('backbones.')
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_timm_tags_download_timms_hub_file(monkeypatch, tmp_path):
    # timm's cfgs name a hub repo without a file: the zoo asks for timm's default file.
    requested = []

    def fake_hf(repo_id, filename):
        requested.append((repo_id, filename))
        raise ConnectionError('offline')
    monkeypatch.setattr(zoo.builder, 'download_hf', fake_hf)
    for full in ('davit_tiny.msft_in1k', 'shvit_s1.in1k', 'halonet26t'):
        with pytest.raises(zoo.builder.CheckpointError, match='could not download'):
            timm.create_model(full, pretrained=True)
    assert requested == [('timm/davit_tiny.msft_in1k', 'model.safetensors'),
                         ('timm/shvit_s1.in1k', 'model.safetensors'),
                         ('timm/halonet26t.a1h_in1k', 'model.safetensors')]


# ---------------------------------------------------------------- timm's constructor arguments

@pytest.mark.parametrize('name', sorted(SMALLEST))
def test_img_size_is_accepted_and_becomes_the_default_input_size(name):
    with torch.device('meta'):
        model = timm.create_model(name, img_size=(160, 192))
        square = timm.create_model(name, img_size=288)
        features = timm.create_model(name, img_size=160, features_only=True)
    assert model.pretrained_cfg['input_size'] == (3, 160, 192)
    assert resolve_model_data_config(model)['input_size'] == (3, 160, 192)
    assert tuple(model.img_size) == (160, 192)
    assert square.pretrained_cfg['input_size'] == (3, 288, 288)
    assert features.pretrained_cfg['input_size'] == (3, 160, 160)
    # the registered default is untouched
    assert get_pretrained_cfg(name).input_size != (3, 160, 192)


@pytest.mark.parametrize('name', sorted(SMALLEST))
def test_model_built_for_img_size_runs_at_it(name):
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=(96, 128), num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, *model.pretrained_cfg['input_size'])).shape == (1, 7)


@pytest.mark.parametrize('bad', [0, -32, (64,), (64, 0), 'large', 64.0, (16, 64)])
def test_bad_img_size_is_refused(bad):
    # (16, 64): below the model's smallest input (one pixel at stride 32)
    with pytest.raises(ValueError, match='img_size'):
        with torch.device('meta'):
            timm.create_model('van_b0', img_size=bad)

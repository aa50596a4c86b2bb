"""Safe checkpoint loading: allow-listed objects load, anything else is refused unexecuted."""
from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import zoo.builder
from zoo.checkpoint import (
    CheckpointError, check_state_dict, load_checkpoint_file, load_state_dict, rename_keys, save_safetensors,
    strip_prefixes, unwrap_state_dict,
)

REPO = Path(__file__).resolve().parents[1]


def _tensors() -> dict[str, torch.Tensor]:
    return {'a.weight': torch.randn(3, 2), 'a.bias': torch.randn(3)}


class _WritesAFile:
    """Unpickling this would run ``open(path, 'w')``: the payload of a malicious checkpoint."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / 'pwned.txt'
    path = tmp_path / 'evil.pth'
    torch.save({'model': _tensors(), 'payload': _WritesAFile(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r'refusing to load .*not on the allow-list.*open'):
        load_checkpoint_file(path)
    assert not marker.exists(), 'the pickled payload ran'


def test_malicious_legacy_format_pickle_is_refused(tmp_path):
    marker = tmp_path / 'pwned.txt'
    path = tmp_path / 'evil_legacy.pth'
    torch.save({'model': _tensors(), 'payload': _WritesAFile(str(marker))}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_official_extras_are_allowed(tmp_path, monkeypatch):
    # What official files pickle besides tensors: argparse args, numpy scalars and arrays, and a
    # yacs CfgNode (faked here under its real module name, so yacs need not be installed).
    yacs = types.ModuleType('yacs')
    yacs_config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        pass
    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    yacs_config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, 'yacs', yacs)
    monkeypatch.setitem(sys.modules, 'yacs.config', yacs_config)
    cfg = CfgNode(MODEL=CfgNode(TYPE='cross-former', DROP_PATH_RATE=0.2))
    path = tmp_path / 'official.pth'
    torch.save({'model': _tensors(), 'args': argparse.Namespace(lr=1e-3, model='van_b0'),
                'config': cfg, 'max_accuracy': np.float64(81.5), 'epoch': np.int64(299),
                'hist': np.arange(3, dtype=np.float32)}, path)
    monkeypatch.delitem(sys.modules, 'yacs.config')
    monkeypatch.delitem(sys.modules, 'yacs')
    ckpt = load_checkpoint_file(path)
    assert ckpt['args'].model == 'van_b0'
    assert ckpt['config']['MODEL']['TYPE'] == 'cross-former'
    assert float(ckpt['max_accuracy']) == 81.5
    assert list(ckpt['hist']) == [0, 1, 2]
    assert torch.equal(load_state_dict(path)['a.bias'], ckpt['model']['a.bias'])


def test_truncated_file_gives_a_clear_error(tmp_path):
    path = tmp_path / 'full.pth'
    torch.save({'model': _tensors()}, path)
    data = path.read_bytes()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_checkpoint_file(cut)
    st = tmp_path / 'w.safetensors'
    save_safetensors(_tensors(), st)
    st_cut = tmp_path / 'cut.safetensors'
    st_cut.write_bytes(st.read_bytes()[:40])
    with pytest.raises(CheckpointError, match='truncated'):
        load_checkpoint_file(st_cut)
    with pytest.raises(CheckpointError, match='not found'):
        load_checkpoint_file(tmp_path / 'missing.pth')


def test_unwrap_keys_and_ema():
    plain, ema = _tensors(), {k: v + 1 for k, v in _tensors().items()}
    ckpt = {'model': plain, 'model_ema': ema, 'optimizer': {'state': {}}, 'epoch': 3}
    assert unwrap_state_dict(ckpt)['a.bias'] is plain['a.bias']
    assert unwrap_state_dict(ckpt, use_ema=True)['a.bias'] is ema['a.bias']
    assert unwrap_state_dict(ckpt, key='model_ema')['a.bias'] is ema['a.bias']
    assert unwrap_state_dict({'state_dict_ema': {'module': ema}}, use_ema=True)['a.bias'] is ema['a.bias']
    assert unwrap_state_dict(plain) == plain
    with pytest.raises(CheckpointError, match="checkpoint has the keys .*'epoch'"):
        unwrap_state_dict({'epoch': 3, 'optimizer': {}})


def test_strip_prefixes_only_when_all_keys_have_them():
    sd = {'module.backbone.x': torch.ones(1), 'module.backbone.y': torch.ones(1)}
    assert set(strip_prefixes(sd)) == {'x', 'y'}
    mixed = {'backbone.x': torch.ones(1), 'neck.y': torch.ones(1)}
    assert strip_prefixes(mixed) == mixed


def test_rename_keys_applies_rules_in_order_and_refuses_merges():
    sd = {'layers.0.blocks.1.w': torch.zeros(1), 'layers.1.downsample.w': torch.ones(2), 'head.b': torch.ones(3)}
    rules = [
        (r'^layers\.(\d+)\.downsample\.', lambda m: f'stages.{int(m[1]) + 1}.downsample.'),
        (r'^layers\.', 'stages.'),
        (r'\.blocks\.(\d+)\.', r'.blocks.\1.inner.'),
    ]
    out = rename_keys(sd, rules)
    assert list(out) == ['stages.0.blocks.1.inner.w', 'stages.2.downsample.w', 'head.b']
    assert out['stages.2.downsample.w'] is sd['layers.1.downsample.w']  # no copies
    with pytest.raises(CheckpointError, match="two checkpoint keys onto 'x'"):
        rename_keys({'a': torch.zeros(1), 'b': torch.zeros(1)}, [(r'^[ab]$', 'x')])


def test_check_state_dict_names_what_is_wrong():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 4))
    sd = dict(model.state_dict())
    check_state_dict(model, sd)
    del sd['1.bias']
    sd['0.weight'] = torch.zeros(5, 2)
    sd['extra'] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        check_state_dict(model, sd, what='my file')
    msg = str(e.value)
    assert 'my file' in msg and '0.weight: file (5, 2) vs model (3, 2)' in msg
    assert 'missing from the file (1): 1.bias' in msg and 'not in the model (1): extra' in msg


def test_safetensors_roundtrip(tmp_path):
    sd = _tensors()
    path = tmp_path / 'w.safetensors'
    save_safetensors(sd, path, metadata={'model': 'x'})
    loaded = load_state_dict(path)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def _smallest_parity_model():
    from zoo_testutils import parity_fixture_names
    return parity_fixture_names()[0]


def test_load_from_official_host_path(tmp_path, monkeypatch):
    # pretrained=True without a file goes to the official host: simulate the download.
    from zoo_testutils import parity_checkpoint, parity_fixture, parity_input, rel_err
    name = _smallest_parity_model()
    local = parity_checkpoint(name, tmp_path / 'official.pth')
    requested = []

    def fake_hf(repo_id, filename):
        requested.append((repo_id, filename))
        return str(local)

    def fake_url(url):
        requested.append(url)
        return str(local)
    monkeypatch.setattr(zoo.builder, 'download_hf', fake_hf)
    monkeypatch.setattr(zoo.builder, 'download_url', fake_url)
    model = timm.create_model(name, pretrained=True).eval()
    cfg = timm.models.get_pretrained_cfg(name)
    assert requested == [(cfg.hf_hub_id, cfg.hf_hub_filename)] if cfg.hf_hub_id else [cfg.url]
    with torch.no_grad():
        y = model(parity_input(name))
    assert rel_err(y, torch.tensor(parity_fixture(name)['expected_logits'])) <= 1e-4


def test_failed_download_names_the_page_and_the_file_option(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError('no network')
    monkeypatch.setattr(zoo.builder, 'download_hf', offline)
    monkeypatch.setattr(zoo.builder, 'download_url', offline)
    name = _smallest_parity_model()
    with pytest.raises(CheckpointError, match=r"(?s)could not download.*no network.*pretrained_cfg_overlay=dict\(file="):
        timm.create_model(name, pretrained=True)


def test_checkpoint_of_another_variant_names_the_variant_it_fits(tmp_path):
    from zoo.registry import family_of, list_models
    from zoo_testutils import parity_checkpoint
    name = _smallest_parity_model()
    other = next(n for n in list_models(family_of(name)) if n != name)
    path = parity_checkpoint(name, tmp_path / 'official.pth')
    with pytest.raises(CheckpointError, match=rf'(?s)does not fit.*shape mismatches.*The file fits {name}'):
        timm.create_model(other, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_convert_checkpoint_tool(tmp_path):
    from zoo_testutils import parity_checkpoint, parity_fixture, parity_input, rel_err
    name = _smallest_parity_model()
    src = parity_checkpoint(name, tmp_path / 'official.pth')
    out = tmp_path / f'{name}.safetensors'
    subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py'), name, str(src), str(out)],
                   check=True, cwd=REPO, capture_output=True)
    from safetensors import safe_open
    with safe_open(str(out), 'pt') as f:
        assert f.metadata()['model'] == name
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(out))).eval()
    with torch.no_grad():
        y = model(parity_input(name))
    assert rel_err(y, torch.tensor(parity_fixture(name)['expected_logits'])) <= 1e-4


def test_pickle_module_not_used_directly():
    # Every load in the project goes through torch.load(weights_only=True) or safetensors.
    offenders = []
    for path in REPO.glob('**/*.py'):
        if any(part in ('.venv', 'tests', 'build') for part in path.parts):
            continue
        text = path.read_text()
        if 'pickle.load' in text or ('torch.load(' in text and 'weights_only=True' not in text):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
    assert pickle  # imported for the payload class above

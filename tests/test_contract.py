"""The model contract: every registered zoo model behaves like a timm model, at any input size.

Cheap checks run on every variant; heavy ones on the smallest of each family by default
(``-m all_variants`` for all of them).
"""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg
from timm.models._manipulate import group_parameters

from zoo.layers import InputError
from zoo.registry import _SkipInitOnMeta, family_of, meta_model, pretrained_tags, timm_tags
from zoo_testutils import ALL_MODELS, DATA, SMALLEST, model_params

# One file per family (tests/data/official_params/<family>.json), each with a '_source' note.
OFFICIAL_PARAMS = {k: v for f in sorted((DATA / 'official_params').glob('*.json'))
                   for k, v in json.loads(f.read_text()).items() if not k.startswith('_')}

# Families whose reference weights are timm's own trainings (the authors released none): they keep
# timm's tags and timm's hub repos ('timm/<name>.<tag>', timm layout, no file name) instead of
# 'official_' tags and named files.
TIMM_WEIGHT_FAMILIES = {'halonet'}
# timm's names kept for timm's models (see TIMM_WEIGHT_FAMILIES) that do not contain the family name.
FAMILY_NAME_EXCEPTIONS = {'eca_halonext26ts': 'halonet'}


def _build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


def _size(name: str) -> tuple[int, int]:
    return tuple(get_pretrained_cfg(name).input_size[1:])


# ---------------------------------------------------------------- cheap, every variant

@pytest.mark.parametrize('name', ALL_MODELS)
def test_param_count_is_official(name):
    assert name in OFFICIAL_PARAMS, f'add the official parameter count of {name} to tests/data/official_params/<family>.json'
    # built as zoo.registry.param_count builds it: its skipped initialisation changes no shape
    assert sum(p.numel() for p in meta_model(name, num_classes=1000).parameters()) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize('name', model_params())
def test_meta_model_has_the_shapes_of_the_model(name):
    # meta_model skips the initialisers on meta tensors only: every parameter and buffer keeps its
    # shape and dtype, and a real tensor's in-place ops still run inside it.
    real = timm.create_model(name)
    meta = meta_model(name)
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == \
        {k: (v.shape, v.dtype) for k, v in real.state_dict().items()}
    assert all(v.is_meta for v in meta.state_dict().values())
    with torch.device('meta'), _SkipInitOnMeta():
        t = torch.zeros(3, device='cpu').fill_(2.0).add_(1.0)
    assert t.tolist() == [3.0, 3.0, 3.0]


@pytest.mark.parametrize('name', ALL_MODELS)
def test_pretrained_cfgs(name):
    # Under timm's own names, timm's tags keep timm's values (tests/test_timm_compat.py checks
    # them against timm's): the conventions below are for the zoo's own tags.
    theirs = timm_tags(name)
    tags = [t for t in pretrained_tags(name) if t not in theirs]
    assert tags or theirs, f'{name} has no pretrained cfg'
    # A family with no released weights (LookupViT) has the single tag 'untrained' and no download.
    no_weights = tags == ['untrained']
    timm_weights = family_of(name) in TIMM_WEIGHT_FAMILIES
    assert no_weights or timm_weights or all(t.startswith('official_') for t in tags), tags
    with torch.device('meta'):
        model = timm.create_model(name)
    modules = dict(model.named_modules())
    for tag in theirs:
        cfg = get_pretrained_cfg(f'{name}.{tag}')
        assert cfg.first_conv in modules and cfg.classifier in modules
    for tag in tags:
        cfg = get_pretrained_cfg(f'{name}.{tag}')
        assert len(cfg.mean) == len(cfg.std) == cfg.input_size[0] == 3
        assert all(0 < s <= 1 for s in cfg.std) and all(0 <= m <= 1 for m in cfg.mean)
        assert 0.5 < cfg.crop_pct <= 1.0
        assert cfg.interpolation in ('bicubic', 'bilinear')
        assert cfg.license and cfg.paper_ids and cfg.paper_ids.startswith('arXiv:')
        assert cfg.origin_url and cfg.origin_url.startswith('https://')
        assert no_weights or cfg.url or cfg.hf_hub_id, f'{name}.{tag}: no download location (set origin_url for manual pages)'
        if timm_weights:
            assert cfg.hf_hub_id == f'timm/{name}.{tag}' and not cfg.hf_hub_filename, cfg.hf_hub_id
        elif cfg.hf_hub_id:
            assert cfg.hf_hub_filename, 'official repos are not timm-layout hub repos: name the file'
        assert cfg.first_conv in modules and cfg.classifier in modules


# ---------------------------------------------------------------- heavy, smallest per family

@pytest.mark.parametrize('name', model_params())
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = _build(name).train()
    out = model(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, model.num_classes)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without gradient: {no_grad[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('name', model_params())
def test_features_only_matches_feature_info(name):
    h, w = 224, 320
    model = _build(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, h, w))
    info = model.feature_info
    assert len(feats) == len(info.channels())
    for f, c, r in zip(feats, info.channels(), info.reduction()):
        assert f.shape == (1, c, math.ceil(h / r), math.ceil(w / r))
    # out_indices selects stages (the second and the last: some families have three)
    last = len(info.channels()) - 1
    model = _build(name, features_only=True, out_indices=(1, last)).eval()
    with torch.no_grad():
        picked = model(torch.randn(1, 3, h, w))
    assert [f.shape[1] for f in picked] == [info.channels()[1], info.channels()[last]]


@pytest.mark.parametrize('name', model_params())
def test_forward_intermediates_match_forward_features(name):
    model = _build(name).eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-6)
        assert len(inters) == len(model.feature_info)
        if not getattr(model, 'num_prefix_tokens', 0):  # plain ViTs return the token sequence as final
            assert torch.equal(inters[-1], final)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in inters[-2:]]
        nhwc = model.forward_intermediates(x, indices=[0], output_fmt='NHWC', intermediates_only=True)
        assert torch.equal(nhwc[0], inters[0].permute(0, 2, 3, 1))
        kept = model.prune_intermediate_layers(indices=[1])
        assert kept == [1]
        pruned = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        assert torch.allclose(pruned[0], inters[1], atol=1e-6)
        assert model.num_classes == 0


@pytest.mark.parametrize('name', model_params())
def test_reset_classifier_and_head_options(name):
    model = _build(name).eval()
    x = torch.randn(1, 3, 64, 64)
    model.reset_classifier(7)
    assert model(x).shape == (1, 7)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, model.num_features)


@pytest.mark.parametrize('name', model_params())
def test_num_classes_and_in_chans(name):
    model = _build(name, num_classes=5, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 96)).shape == (2, 5)


@pytest.mark.parametrize('name', model_params())
@pytest.mark.parametrize('hw', [(97, 131), (224, 320), (320, 224)])
def test_odd_and_non_square_inputs(name, hw):
    model = _build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', model_params())
def test_default_size_unchanged_by_batching(name):
    # A sample's output must not depend on the other samples or the batch size (eval mode).
    model = _build(name).eval()
    x = torch.randn(3, 3, *_size(name))
    with torch.no_grad():
        assert torch.allclose(model(x)[1:2], model(x[1:2]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', model_params())
def test_grad_checkpointing_gives_the_same_gradients(name):
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for enable in (False, True):
        model = _build(name).train()
        model.set_grad_checkpointing(enable)
        model(x).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', model_params())
def test_group_matcher_covers_every_parameter(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert isinstance(model.no_weight_decay(), set)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('name', model_params())
def test_bad_inputs_give_clear_errors(name):
    model = _build(name).eval()
    h, w = 64, 64
    cases = [
        (torch.randn(1, 4, h, w), 'input channels'),
        (torch.randn(3, h, w), '4-D'),
        (torch.randint(0, 255, (1, 3, h, w), dtype=torch.uint8), 'floating-point'),
        (torch.randn(1, 3, h, w, dtype=torch.float64), 'float32 weights'),
        (torch.full((1, 3, h, w), float('nan')), 'NaN'),
        (torch.randn(1, 3, h, w).index_put_((torch.tensor(0), torch.tensor(1), torch.tensor(5), torch.tensor(7)),
                                            torch.tensor(float('inf'))), 'infinite'),
    ]
    smallest = model.min_input_size
    cases.append((torch.randn(1, 3, smallest - 1, 200), f'at least {smallest}x{smallest}'))
    for x, message in cases:
        with pytest.raises(InputError, match=message):
            model(x)
    with torch.no_grad():  # exactly the minimum works
        assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, model.num_classes)


def test_nan_check_can_be_disabled(monkeypatch):
    model = _build(sorted(ALL_MODELS)[0]).eval()
    monkeypatch.setenv('ZOO_CHECK_FINITE', '0')
    with torch.no_grad():
        assert torch.isnan(model(torch.full((1, 3, 64, 64), float('nan')))).all()


@pytest.mark.parametrize('name', ALL_MODELS)
def test_registered_under_its_family(name):
    assert name.startswith(family_of(name)) or family_of(name) in name or FAMILY_NAME_EXCEPTIONS.get(name) == family_of(name)


# ---------------------------------------------------------------- export and compile

def _onnx_params() -> list:
    """(name, features_only): the dense export of each family's smallest model by default, its
    classifier export in the slow suite (which CI runs), every other variant under all_variants."""
    out = []
    for param in model_params():
        name = param.values[0]
        for features_only, kind in [(False, 'classifier'), (True, 'features')]:
            slow = [pytest.mark.slow] if name in SMALLEST and not features_only else []
            out.append(pytest.param(name, features_only, id=f'{kind}-{name}', marks=[*param.marks, *slow]))
    return out


@pytest.mark.parametrize('name, features_only', _onnx_params())
def test_onnx_export_matches_pytorch(name, features_only, tmp_path):
    from zoo.export import check_onnx, export_onnx
    model = _build(name, features_only=features_only).eval()
    info = export_onnx(model, tmp_path / f'{name}.onnx', input_size=(1, 3, 128, 160))
    # Models whose path depends on the size (CrossFormer) say so and export a static size.
    size_dependent = any(getattr(m, 'onnx_size_dependent', None) for m in model.modules())
    expected_axes = ['batch'] if size_dependent else ['batch', 'height', 'width']
    assert info.dynamic_axes == expected_axes, info.notes
    for shape in [(1, 3, 128, 160), (2, 3, 128, 160) if size_dependent else (2, 3, 97, 131)]:
        errors = check_onnx(model, info.path, torch.randn(shape))
        assert max(errors.values()) <= 1e-4, errors


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(SMALLEST))  # one model per family: compiling is slow
def test_torch_compile_matches_eager(name):
    model = _build(name).eval()
    # dynamic=False: each size compiles as its own static graph. With automatic dynamic shapes
    # the second size retraces symbolically, which for timm's DaViT did not finish in 5 minutes
    # (see model_cards/davit.md); static graphs are what most users deploy.
    compiled = torch.compile(model, dynamic=False)
    with torch.no_grad():
        for hw in [(224, 224), (97, 131)]:
            x = torch.randn(2, 3, *hw)
            assert torch.allclose(compiled(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(SMALLEST))
def test_largest_supported_input(name):
    # 2048 on a side, not square: the upper end of the size contract, as dense features.
    model = _build(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 2048, 1536))
    for f, c, r in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape == (1, c, 2048 // r, 1536 // r) and torch.isfinite(f).all()


# ---------------------------------------------------------------- package direction

ZOO_DIR = DATA.parents[1] / 'zoo'
_IMPORTERS = {'import_module', '__import__', 'find_spec'}  # importlib's ways to import by name


def _names_backbones(name: str | None) -> bool:
    return name is not None and (name == 'backbones' or name.startswith('backbones.'))


def _lines_naming_backbones(path) -> list[int]:
    """Lines of a module that import the family package or use the name it is bound to."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(_names_backbones(a.name) for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and _names_backbones(node.module):
            lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id == 'backbones':
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, 'attr', getattr(node.func, 'id', None)) in _IMPORTERS:
            if any(isinstance(a, ast.Constant) and isinstance(a.value, str) and _names_backbones(a.value)
                   for a in node.args):
                lines.append(node.lineno)
    return lines


def test_core_does_not_import_the_families():
    # The families (backbones/) build on zoo/; zoo/ imports them in one visible place only, so
    # that `import zoo` (README, mm configs' custom_imports) keeps registering every family.
    found = {p.relative_to(ZOO_DIR.parent).as_posix(): lines
             for p in sorted(ZOO_DIR.rglob('*.py')) if (lines := _lines_naming_backbones(p))}
    assert list(found) == ['zoo/__init__.py'] and len(found['zoo/__init__.py']) == 1, found
    line = (ZOO_DIR / '__init__.py').read_text().splitlines()[found['zoo/__init__.py'][0] - 1]
    assert line.startswith('import backbones  #'), line


@pytest.mark.parametrize('first', ['backbones', 'zoo', 'zoo.mm'])
def test_import_order(first):
    # Whichever is imported first in a fresh interpreter, every family ends up registered.
    code = (f'import {first}\nimport zoo, backbones, timm\nfrom zoo.registry import list_families, list_models\n'
            'print(len(list_families()), len(list_models()), type(timm.create_model("van_b0")).__module__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ZOO_DIR.parent,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    families = len({p.stem for p in (ZOO_DIR.parent / 'backbones').glob('*.py')} - {'__init__'})
    assert out.stdout.split() == [str(families), str(len(ALL_MODELS)), 'backbones.van']

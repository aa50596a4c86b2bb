"""Tests of zoo.export and tools/export_onnx.py: ONNX export of classifiers and feature
extractors, ONNX Runtime agreement with PyTorch, dynamic shapes and their fallback."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from torch import nn

from zoo.export import check_onnx, export_onnx, max_rel_error

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


@pytest.fixture(scope='module')
def resnet() -> nn.Module:
    return timm.create_model('resnet18', pretrained=False).eval()


def test_classifier_dynamic(resnet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / 'resnet18.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the exporter's own warnings are recorded, not raised
        info = export_onnx(resnet, path, input_size=(1, 3, 128, 160))
    assert info.output_names == ['logits'] and not info.dynamo
    assert info.dynamic_axes == ['batch', 'height', 'width']
    assert max(info.verified_rel_err.values()) <= TOL
    graph_input = onnx.load(str(path)).graph.input[0]
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == \
        ['batch', 3, 'height', 'width']
    assert check_onnx(resnet, path, torch.randn(1, 3, 128, 160))['logits'] <= TOL
    # A size and batch different from the export's.
    assert check_onnx(resnet, path, torch.randn(3, 3, 224, 96))['logits'] <= TOL


def test_features_only(tmp_path: Path) -> None:
    path = tmp_path / 'resnet18_features.onnx'
    model = timm.create_model('resnet18', features_only=True).eval()
    info = export_onnx(model, path, input_size=(1, 3, 128, 128))
    assert info.output_names == [f'feat{i}' for i in range(5)]
    assert info.dynamic_axes == ['batch', 'height', 'width']
    errors = check_onnx(model, path, torch.randn(2, 3, 96, 160))
    assert list(errors) == info.output_names and max(errors.values()) <= TOL


def test_fixed_size_model_falls_back(tmp_path: Path) -> None:
    # A ViT with a fixed position embedding cannot change size: only the batch stays dynamic.
    model = timm.create_model('test_vit').eval()
    shape = (1, *model.pretrained_cfg['input_size'])
    info = export_onnx(model, tmp_path / 'vit.onnx', input_size=shape)
    assert info.dynamic_axes == ['batch']
    assert any('height/width' in note for note in info.notes)
    assert check_onnx(model, info.path, torch.randn(2, *shape[1:]))['logits'] <= TOL


def test_size_dependent_model_exports_its_size(tmp_path: Path) -> None:
    # A path chosen from the size (here: halve the map only when it is larger than 8) that the
    # single verification shape would not catch: the model says so, and H/W stay static.
    class SizeDependent(nn.Module):
        onnx_size_dependent = 'halves maps larger than 8 pixels'

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[..., ::2, ::2] * 2 if x.shape[-1] > 8 else x

    model = nn.Sequential(nn.Conv2d(3, 4, 1), SizeDependent()).eval()
    info = export_onnx(model, tmp_path / 'sd.onnx', input_size=(1, 3, 16, 16))
    assert info.dynamic_axes == ['batch']
    assert any('SizeDependent: halves maps' in note for note in info.notes)
    assert max(check_onnx(model, info.path, torch.randn(3, 3, 16, 16)).values()) <= TOL


def test_static_export_by_name(tmp_path: Path) -> None:
    info = export_onnx('resnet18', tmp_path / 'static.onnx', input_size=(1, 3, 64, 64), dynamic=False,
                       features_only=True)
    assert info.dynamic_axes == [] and info.verified_shape is None
    assert info.output_names == [f'feat{i}' for i in range(5)]
    model = timm.create_model('resnet18', features_only=True).eval()
    with pytest.raises(Exception, match='dimensions'):  # ONNX Runtime rejects any other shape
        check_onnx(model, info.path, torch.randn(1, 3, 96, 96))


def test_dynamo_exporter(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    info = export_onnx(model, tmp_path / 'small.onnx', input_size=(1, 3, 32, 32), dynamo=True)
    assert info.dynamo and info.dynamic_axes == ['batch', 'height', 'width']
    assert info.input_shape[0] == 2  # batch 1 would be specialised by torch.export
    assert check_onnx(model, info.path, torch.randn(1, 3, 48, 40))['logits'] <= TOL


def test_max_rel_error() -> None:
    expected = np.array([1.0, -4.0, 2.0])
    assert max_rel_error(expected + [0.0, 0.0, 0.02], expected) == pytest.approx(0.005)
    assert max_rel_error(np.zeros(2), np.zeros(2)) == 0.0


def test_export_cli(tmp_path: Path) -> None:
    out = tmp_path / 'cli.onnx'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'export_onnx.py'), 'resnet18', '-o', str(out),
                           '--features', '--img-size', '96', '128', '--check'],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists()
    assert 'dynamic axes: batch, height, width' in proc.stdout
    assert 'feat4' in proc.stdout and 'ONNX Runtime vs PyTorch' in proc.stdout

"""Export timm / zoo models to ONNX and check the result with ONNX Runtime.

Exporter choice. ``torch.onnx.export`` has two exporters; both handle timm models at
opset 18 with onnxscript installed and both match PyTorch to ~1e-6. The default here is
the TorchScript tracer (``dynamo=False``) because it gives dynamic batch *and*
height/width in seconds: the traced graph keeps the shape arithmetic (window padding,
reshapes) as ONNX ops, e.g. timm's ``davit_tiny`` exports with all three axes dynamic and
verified in ~9 s on 2 cores. The torch.export-based exporter (``dynamo=True``) reasons
about every shape symbolically: on ``davit_tiny`` with dynamic height/width it had not
finished after 25 minutes (with ``Dim.AUTO`` or named dims alike), and even a static
export takes twice as long as tracing (13.5 s vs 7 s). It remains available with
``dynamo=True`` (same fallbacks); its ``DeprecationWarning``-free path is the one to move
to when the tracer is removed from PyTorch.

A tracer's weak point is that Python control flow on shapes is frozen at the traced size,
which could silently give wrong numbers at another size. So a dynamic export is never
trusted as is: :func:`export_onnx` runs the ONNX model at a second shape (every dynamic
axis changed) against PyTorch and, if it fails or disagrees, re-exports with fewer dynamic
axes (batch only, then fully static) and says so in :attr:`ExportInfo.notes`. Models that
know their graph depends on the size (a module's ``onnx_size_dependent`` reason) are exported
with static height/width from the start.

Warnings raised while exporting (the tracer's ``DeprecationWarning``, ``TracerWarning``)
are recorded in :attr:`ExportInfo.warnings` instead of being emitted, so a test run with
warnings as errors does not fail inside the exporter.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

__all__ = ['ExportInfo', 'OrtModel', 'export_onnx', 'check_onnx', 'max_rel_error']

_AXES = {'batch': 0, 'height': 2, 'width': 3}
# Changes applied to the export shape to verify each dynamic axis (H+32 and W+64 keep
# stride-32 models valid and differ, so a height/width swap would show).
_VERIFY_STEP = {'batch': 1, 'height': 32, 'width': 64}
# Dynamic exports that disagree with PyTorch by more than this at the second shape are
# wrong (traced control flow); fp32 round-off is around 1e-6.
_VERIFY_TOL = 1e-3
_EXTERNAL_DATA_BYTES = 1536 * 2 ** 20  # protobuf files are limited to 2 GiB


@dataclass
class ExportInfo:
    """What :func:`export_onnx` produced.

    Attributes:
        path: the ONNX file.
        opset: ONNX opset.
        dynamo: whether the torch.export-based exporter was used.
        input_name: the graph input (``'input'``).
        output_names: ``['logits']`` for a classifier, ``['feat0', 'feat1', ...]`` for a
            feature extractor (one per feature level).
        input_shape: the shape that was exported (traced).
        dynamic_axes: the input axes that are dynamic and verified, a subset of
            ``['batch', 'height', 'width']``; empty for a static model.
        verified_shape: the second input shape the dynamic model was checked at.
        verified_rel_err: max relative error per output at ``verified_shape``.
        notes: why axes were dropped, and other decisions.
        warnings: warnings raised by the exporter (recorded, not emitted).
        export_s: wall time of the export(s).
    """

    path: str
    opset: int
    dynamo: bool
    input_name: str
    output_names: list[str]
    input_shape: tuple[int, ...]
    dynamic_axes: list[str]
    verified_shape: tuple[int, ...] | None = None
    verified_rel_err: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    export_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OrtModel:
    """An ONNX file in an ONNX Runtime session on the CPU execution provider, callable like a model.

    Args:
        path: the ONNX file.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        # Fatal only: run failures are raised as exceptions anyway, and a rejected shape is an
        # expected outcome while probing dynamic axes.
        options.log_severity_level = 4
        self.session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """Run one input; returns the outputs in graph order."""
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        return self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})


def max_rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max|expected|`` (the absolute error if ``expected`` is all zero).

    Args:
        actual: e.g. the ONNX Runtime output.
        expected: the reference (PyTorch) output of the same shape.
    """
    if actual.shape != expected.shape:
        raise ValueError(f'shape mismatch: {actual.shape} vs {expected.shape}')
    diff = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    scale = float(np.abs(expected).max(initial=0.0))
    return diff / scale if scale > 0 else diff


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f'{type(err).__name__}: {lines[0][:200] if lines else ""}'


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    with torch.inference_mode():
        out = model(x)
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    raise TypeError(f'cannot export a model returning {type(out).__name__}; expected a tensor or a list of tensors')


def check_onnx(model: nn.Module, path: str | Path, inputs: torch.Tensor, *,
               threads: int | None = None) -> dict[str, float]:
    """Run an exported model in ONNX Runtime (CPU) and compare it with PyTorch.

    Args:
        model: the PyTorch model that was exported (put in eval mode).
        path: the ONNX file.
        inputs: an input batch (any shape the ONNX model accepts).
        threads: ONNX Runtime intra-op threads.

    Returns:
        Output name -> max relative error ``max|onnx - torch| / max|torch|``.
    """
    model.eval()
    session = OrtModel(path, threads)
    got = session(inputs)
    expected = _run(model, inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else expected
    if len(got) != len(expected):
        raise ValueError(f'{path} has {len(got)} outputs, the model {len(expected)}')
    return {name: max_rel_error(a, e.numpy()) for name, a, e in zip(session.output_names, got, expected)}


def _export_once(model: nn.Module, path: Path, x: torch.Tensor, output_names: list[str], axes: list[str],
                 opset: int, dynamo: bool, external_data: bool) -> list[str]:
    """Export with the given dynamic input axes; returns the warnings raised, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        if dynamo:
            from torch.export import Dim

            # Named dims give readable ONNX dimension names. torch.onnx may relax rather than
            # reject a dim the model specialises, so the caller checks a second shape anyway.
            shapes = ({_AXES[a]: Dim(a) for a in axes},) if axes else None
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset, input_names=['input'],
                              output_names=output_names, dynamic_shapes=shapes, external_data=external_data,
                              verbose=False)
        else:
            dynamic_axes: dict[str, dict[int, str]] = {}
            if axes:
                dynamic_axes['input'] = {_AXES[a]: a for a in axes}
                if 'batch' in axes:
                    dynamic_axes.update({name: {0: 'batch'} for name in output_names})
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=['input'],
                              output_names=output_names, dynamic_axes=dynamic_axes or None)
    return list(dict.fromkeys(f'{w.category.__name__}: {(str(w.message).splitlines() or [""])[0]}'
                              for w in caught))


def _size_dependent_reason(model: nn.Module) -> str | None:
    """Why the model's graph depends on the input size, if one of its modules says so.

    A module whose forward takes different paths for different input sizes (Python control
    flow that a traced graph freezes) sets the class attribute ``onnx_size_dependent`` to the
    reason; a dynamic height/width export of it would be wrong at some sizes without any
    error, and checking one second shape need not notice.
    """
    for module in model.modules():
        reason = getattr(module, 'onnx_size_dependent', None)
        if reason:
            return f'{type(module).__name__}: {reason}'
    return None


def export_onnx(model: nn.Module | str, path: str | Path, *, input_size: Sequence[int] = (1, 3, 224, 224),
                opset: int = 18, dynamic: bool = True, features_only: bool = False, dynamo: bool = False,
                create_kwargs: dict[str, Any] | None = None) -> ExportInfo:
    """Export a classifier or a feature extractor to ONNX, with verified dynamic axes.

    With ``dynamic``, batch, height and width are made dynamic and checked with ONNX
    Runtime at a second shape; when that fails the export falls back to a dynamic batch
    only, then to a static model, recording why in ``notes`` (see the module docstring).

    Args:
        model: a module, put in eval mode (its outputs decide the output names: one tensor
            -> ``logits``, a list -> ``feat0..``), or a timm model name, built with ``pretrained=False``
            unless ``create_kwargs`` says otherwise.
        path: where to write the ``.onnx`` file (directories are created).
        input_size: full example input shape ``(B, C, H, W)``.
        opset: ONNX opset version.
        dynamic: try dynamic batch/height/width axes.
        features_only: build a named model as a feature extractor (ignored for a module).
        dynamo: use the torch.export-based exporter instead of the tracer.
        create_kwargs: more ``timm.create_model`` arguments for a named model.
    """
    if isinstance(model, str):
        kwargs = {'pretrained': False, **(create_kwargs or {})}
        if features_only:
            kwargs['features_only'] = True
        model = timm.create_model(model, **kwargs)
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_size)
    if len(shape) != 4:
        raise ValueError(f'input_size must be (B, C, H, W), got {shape}')
    outputs = _run(model, torch.randn(shape))
    output_names = ['logits'] if isinstance(outputs, torch.Tensor) else [f'feat{i}' for i in range(len(outputs))]
    external_data = sum(p.numel() * p.element_size() for p in model.parameters()) > _EXTERNAL_DATA_BYTES
    info = ExportInfo(str(path), opset, dynamo, 'input', output_names, shape, [])

    candidates = [['batch', 'height', 'width'], ['batch'], []] if dynamic else [[]]
    size_dependent = _size_dependent_reason(model)
    if dynamic and size_dependent:
        candidates = candidates[1:]
        info.notes.append(f'height/width kept static: {size_dependent}')
    start = time.perf_counter()
    for axes in candidates:
        x_shape = list(shape)
        if dynamo and 'batch' in axes and shape[0] == 1:
            x_shape[0] = 2  # torch.export specialises sizes 0 and 1, so trace batch 2
        x = torch.randn(x_shape)
        try:
            info.warnings += [w for w in _export_once(model, path, x, output_names, axes, opset, dynamo,
                                                      external_data) if w not in info.warnings]
        except Exception as err:  # the exporter raises many types; any failure means "try fewer axes"
            if not axes:
                raise
            info.notes.append(f'dynamic {"/".join(axes)} export failed ({_first_line(err)}); retrying with '
                              'fewer dynamic axes')
            continue
        if not axes:
            break
        verify_shape = list(x_shape)
        for a in axes:
            verify_shape[_AXES[a]] += _VERIFY_STEP[a]
        try:
            errors = check_onnx(model, path, torch.randn(verify_shape))
        except Exception as err:  # ONNX Runtime (or the model itself) rejects the shape
            info.notes.append(f'dynamic {"/".join(axes)} export could not be checked at {tuple(verify_shape)} '
                              f'({_first_line(err)}); retrying with fewer dynamic axes')
            continue
        if max(errors.values()) > _VERIFY_TOL:
            info.notes.append(f'dynamic {"/".join(axes)} export is wrong at {tuple(verify_shape)} (max rel err '
                              f'{max(errors.values()):.2g}: shape-dependent control flow was traced); retrying '
                              'with fewer dynamic axes')
            continue
        info.dynamic_axes, info.verified_shape, info.verified_rel_err = axes, tuple(verify_shape), errors
        info.input_shape = tuple(x_shape)
        break
    info.export_s = time.perf_counter() - start
    if dynamic and not info.dynamic_axes:
        info.notes.append('exported with static shapes: ONNX Runtime accepts only the exported input shape')
    return info

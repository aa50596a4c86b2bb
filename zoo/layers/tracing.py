"""Whether the current forward is being recorded into a graph, for code that must take a
shape-independent path then (the traced size would otherwise be frozen into the graph)."""
from __future__ import annotations

import torch

__all__ = ['is_tracing', 'is_capturing']


def is_tracing() -> bool:
    """The TorchScript tracer or an ONNX export is recording: Python branches on shapes freeze."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def is_capturing() -> bool:
    """Any graph capture (tracing, scripting, ``torch.compile``, ONNX export): also no eager-only
    checks or caches then."""
    return is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()

"""Compatibility of the OpenMMLab stack with current PyTorch, in one place.

- mmengine 0.10.7 loads checkpoints (``load_checkpoint``, ``resume``, ``load_from``) with a
  plain ``torch.load``, whose default became ``weights_only=True`` in torch 2.6; the files
  the Runner writes hold a few non-tensor objects (message hub history buffers, numpy
  arrays and scalars) and fail. Turning the protection off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``)
  is not acceptable; instead exactly those objects are added to torch's allow-list.
"""
from __future__ import annotations

import torch
from mmengine.logging.history_buffer import HistoryBuffer

from ..checkpoint import register_safe_globals, safe_globals

# What mmengine Runner checkpoints pickle besides tensors and plain containers.
MMENGINE_CHECKPOINT_GLOBALS = [HistoryBuffer]

register_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
torch.serialization.add_safe_globals(safe_globals())

"""Attention ops with interchangeable backends, one module per attention pattern.

Patterns (each module holds its public op, its plain reference implementation and its fast
paths side by side, with the ``can_run`` check of each path that computes only some calls):

- :mod:`.dense`: :func:`dense_attention` (reference, sdpa, xformers);
- :mod:`.window`: :func:`window_attention`, non-overlapping windows (reference, sdpa, natten,
  xformers);
- :mod:`.grouped`: :func:`grouped_attention`, CrossFormer's dense and dilated groups on maps of
  any size (reference, sdpa, natten, xformers);
- :mod:`.routed`: :func:`routed_attention`, BiFormer's routed regions (reference, sdpa, triton);
- :mod:`.linear`: :func:`linear_attention`, RALA / RAVLT (reference);
- :mod:`.halo`: :func:`halo_attention`, HaloNet (reference, sdpa);
- :mod:`.causal`: :func:`causal_post_softmax_attention`, iLLaMA (reference, sdpa);
- :mod:`.cross`: :func:`gather_attention` / :func:`infuse_attention`, LookupViT (reference).

Backends: ``'reference'`` (alias ``'math'``; plain PyTorch, the ground truth), ``'sdpa'``
(``torch.nn.functional.scaled_dot_product_attention``), ``'natten'`` (``pip install
'zoo[natten]'``), ``'xformers'`` (``pip install 'zoo[xformers]'``, CUDA only) and ``'triton'``
(our kernel; CUDA, or CPU with ``TRITON_INTERPRET=1``). Choose one per call with ``backend=``,
per block with :func:`use_backend`, or per process with the ``ZOO_ATTENTION_BACKEND``
environment variable; see ``zoo.attention._backends`` for the exact rule. Only ``backend=`` is
strict: the other two are preferences, and an op that the preferred backend cannot run falls
back to its default with a one-time :class:`BackendFallbackWarning`. ``python -m zoo backends``
shows what runs here, per op and per family.

Importing this package imports none of triton, natten or xformers.
"""

from ._backends import (
    BACKENDS,
    CALL_LIMITS,
    ENV_VAR,
    BackendFallbackWarning,
    BackendNotSupported,
    BackendUnavailable,
    Pattern,
    available_backends,
    backend_status,
    default_backend,
    get_backend,
    list_ops,
    record_ops,
    use_backend,
)
from .dense import dense_attention
from .window import window_attention
from .grouped import grouped_attention, strided_group_size
from .routed import routed_attention
from .linear import linear_attention
from .halo import halo_attention
from .causal import causal_post_softmax_attention, soft_causal_mask
from .cross import gather_attention, infuse_attention

__all__ = [
    'BACKENDS',
    'CALL_LIMITS',
    'ENV_VAR',
    'BackendFallbackWarning',
    'BackendNotSupported',
    'BackendUnavailable',
    'Pattern',
    'available_backends',
    'backend_status',
    'default_backend',
    'get_backend',
    'list_ops',
    'record_ops',
    'use_backend',
    'dense_attention',
    'window_attention',
    'grouped_attention',
    'strided_group_size',
    'routed_attention',
    'linear_attention',
    'halo_attention',
    'causal_post_softmax_attention',
    'soft_causal_mask',
    'gather_attention',
    'infuse_attention',
]

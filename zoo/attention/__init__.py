"""Attention ops with interchangeable backends.

Ops (each takes q, k, v and returns a tensor shaped like q with v's last dim):
:func:`dense_attention`, :func:`window_attention`, :func:`neighborhood_attention`,
:func:`routed_attention`, :func:`linear_attention`.

Backends: ``'reference'`` (alias ``'math'``; plain PyTorch, the ground truth), ``'sdpa'``
(``torch.nn.functional.scaled_dot_product_attention``), ``'natten'`` (``pip install
'zoo[natten]'``), ``'xformers'`` (``pip install 'zoo[xformers]'``, CUDA only) and ``'triton'``
(our kernel; CUDA, or CPU with ``TRITON_INTERPRET=1``). Choose one per call with ``backend=``,
per block with :func:`use_backend`, or per process with the ``ZOO_ATTENTION_BACKEND``
environment variable; see ``zoo.attention._dispatch`` for the exact rule. Only ``backend=`` is
strict: the other two are preferences, and an op that the preferred backend cannot run falls
back to its default with a one-time :class:`BackendFallbackWarning`. ``python -m zoo backends``
shows what runs here, per op and per family.

Importing this package imports none of triton, natten or xformers.
"""

from ._dispatch import (
    BACKENDS,
    CALL_LIMITS,
    ENV_VAR,
    OPS,
    BackendFallbackWarning,
    BackendNotSupported,
    BackendUnavailable,
    available_backends,
    backend_status,
    default_backend,
    dense_attention,
    get_backend,
    linear_attention,
    list_ops,
    neighborhood_attention,
    record_ops,
    routed_attention,
    use_backend,
    window_attention,
)
from .halo import halo_attention
from .post_softmax_mask import causal_post_softmax_attention, soft_causal_mask
from .bidirectional_cross import gather_attention, infuse_attention

__all__ = [
    'BACKENDS',
    'CALL_LIMITS',
    'ENV_VAR',
    'OPS',
    'BackendFallbackWarning',
    'BackendNotSupported',
    'BackendUnavailable',
    'available_backends',
    'backend_status',
    'default_backend',
    'dense_attention',
    'get_backend',
    'linear_attention',
    'list_ops',
    'neighborhood_attention',
    'record_ops',
    'routed_attention',
    'use_backend',
    'window_attention',
    'causal_post_softmax_attention',
    'halo_attention',
    'soft_causal_mask',
    'gather_attention',
    'infuse_attention',
]

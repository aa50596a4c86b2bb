"""Attention ops with interchangeable backends.

Ops (each takes q, k, v and returns a tensor shaped like q with v's last dim):
:func:`dense_attention`, :func:`window_attention`, :func:`neighborhood_attention`,
:func:`routed_attention`, :func:`linear_attention`.

Backends: ``'reference'`` (alias ``'math'``; plain PyTorch, the ground truth), ``'sdpa'``
(``torch.nn.functional.scaled_dot_product_attention``), ``'natten'`` (``pip install
'zoo[natten]'``), ``'xformers'`` (``pip install 'zoo[xformers]'``, CUDA only) and ``'triton'``
(our kernel; CUDA, or CPU with ``TRITON_INTERPRET=1``). Choose one per call with ``backend=``,
per block with :func:`use_backend`, or per process with the ``ZOO_ATTENTION_BACKEND``
environment variable; see ``zoo.attention._dispatch`` for the exact rule.

Importing this package imports none of triton, natten or xformers.
"""

from ._dispatch import (
    BACKENDS,
    ENV_VAR,
    OPS,
    BackendNotSupported,
    BackendUnavailable,
    available_backends,
    dense_attention,
    get_backend,
    linear_attention,
    neighborhood_attention,
    routed_attention,
    use_backend,
    window_attention,
)
from .halo import halo_attention
from .post_softmax_mask import causal_post_softmax_attention, soft_causal_mask
from .bidirectional_cross import gather_attention, infuse_attention

__all__ = [
    'BACKENDS',
    'ENV_VAR',
    'OPS',
    'BackendNotSupported',
    'BackendUnavailable',
    'available_backends',
    'dense_attention',
    'get_backend',
    'linear_attention',
    'neighborhood_attention',
    'routed_attention',
    'use_backend',
    'window_attention',
    'causal_post_softmax_attention',
    'halo_attention',
    'soft_causal_mask',
    'gather_attention',
    'infuse_attention',
]

"""NATTEN path for neighbourhood attention (``pip install 'zoo[natten]'``).

Calls ``natten.functional.na2d`` (NATTEN >= 0.20), which takes heads-last tensors
(B, H, W, heads, d). NATTEN is imported here, inside the call, only once dispatch has checked
that it imports. Two limits of NATTEN >= 0.20 show up as clear errors instead of wrong results:
it has no relative position bias, and on CPU it runs Flex Attention, which has no backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._dispatch import BackendNotSupported, BackendUnavailable

_OP = 'neighborhood_attention'


def neighborhood_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kernel_size: int,
    *,
    dilation: int,
    rpb: Tensor | None,
    scale: float,
) -> Tensor:
    """Neighbourhood attention through NATTEN; see ``zoo.attention.neighborhood_attention``.

    Raises:
        BackendNotSupported: ``rpb`` is given, or NATTEN has no kernel for these inputs
            (e.g. on CPU it needs head_dim == dv and float32/float16/bfloat16).
        BackendUnavailable: gradients are required on CPU, where NATTEN is forward-only.
    """
    if rpb is not None:
        raise BackendNotSupported(
            f"{_OP}: the 'natten' backend cannot apply rpb (NATTEN >= 0.20 dropped relative "
            "position bias); use backend 'sdpa' or 'reference' for models with rpb"
        )
    if q.device.type == 'cpu' and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise BackendUnavailable(
            f"{_OP}: the 'natten' backend is forward-only on cpu (NATTEN runs Flex Attention "
            "there, which has no CPU backward); call it under torch.no_grad() or "
            "torch.inference_mode(), or use backend 'sdpa' or 'reference' to train on cpu"
        )
    from natten.functional import na2d

    def heads_last(t: Tensor) -> Tensor:
        return t.permute(0, 2, 3, 1, 4).contiguous()

    try:
        out = na2d(
            heads_last(q), heads_last(k), heads_last(v),
            kernel_size=kernel_size, dilation=dilation, scale=scale,
        )
    except NotImplementedError as exc:  # NATTEN found no kernel for these inputs
        raise BackendNotSupported(
            f"{_OP}: NATTEN has no kernel for head_dim={q.shape[-1]}, dv={v.shape[-1]}, "
            f"dtype={q.dtype} on {q.device.type} ({exc}); use backend 'sdpa' or 'reference'"
        ) from exc
    return out.permute(0, 3, 1, 2, 4)

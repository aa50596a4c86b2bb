"""Backend registry, backend selection, input validation and the public attention ops.

Every op goes through the same three steps: validate its inputs once (:func:`_check_qkv` and
friends), pick the backends to try with the one selection rule (:func:`_candidates`), then
call the function of the same name as the op in the backend's module. Backend modules are
imported only when first used, so importing ``zoo.attention`` never imports triton, natten or
xformers.

Selection, highest priority first:

1. the ``backend=`` keyword of the op;
2. the innermost :func:`use_backend` context (a context variable, so nested and per-task);
3. the ``ZOO_ATTENTION_BACKEND`` environment variable, read at each call;
4. the op's default: ``'sdpa'`` where the op has an sdpa path, else ``'reference'``.

The first of these that is set decides. A setting may list several names separated by commas
(``'triton,sdpa'``), so that one setting can cover a model whose blocks use different ops.

Only the ``backend=`` argument is strict: its first name that implements the op is used, none
is :class:`BackendNotSupported`, and one that cannot run here is :class:`BackendUnavailable`.
A global setting (:func:`use_backend` or the environment variable) is a preference, so that no
setting can break a model: its first name that implements the op and can run here is used,
and if that backend then refuses the call's arguments (e.g. NATTEN without relative position
bias) the next one runs. When a listed backend implements the op but cannot run it, or no
listed backend implements it, the op runs on its default instead, with one
:class:`BackendFallbackWarning` per op and setting that says why. A listed name that does not
implement the op is skipped silently when a later listed name does (that is what lists are for).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

ENV_VAR = 'ZOO_ATTENTION_BACKEND'

BACKENDS: tuple[str, ...] = ('reference', 'sdpa', 'natten', 'xformers', 'triton')
_ALIASES = {'math': 'reference'}

# The zoo.attention submodule of each backend; it defines one function per op it implements.
_MODULES = {
    'reference': 'reference',
    'sdpa': 'sdpa',
    'natten': 'natten_backend',
    'xformers': 'xformers_backend',
    'triton': 'triton_kernels',
}

_IMPLEMENTATIONS: dict[str, tuple[str, ...]] = {
    'dense_attention': ('reference', 'sdpa', 'xformers'),
    'window_attention': ('reference', 'sdpa'),
    'neighborhood_attention': ('reference', 'sdpa', 'natten'),
    'routed_attention': ('reference', 'sdpa', 'triton'),
    'linear_attention': ('reference',),
}
OPS: tuple[str, ...] = tuple(_IMPLEMENTATIONS)
_DEFAULTS = {op: 'sdpa' if 'sdpa' in impls else 'reference' for op, impls in _IMPLEMENTATIONS.items()}
_LOADED: dict[str, types.ModuleType] = {}
# What a backend that runs an op here still refuses, depending on the call (it raises before
# computing; under a global preference the call then runs on the next backend or the default).
CALL_LIMITS: dict[tuple[str, str], str] = {
    ('neighborhood_attention', 'natten'): (
        'no relative position bias (rpb); forward only on CPU; no kernel for some head dims and dtypes'
    ),
    ('routed_attention', 'triton'): 'float32, float16 and bfloat16 only',
}

# Every op with backends, those of this module and those defined in their own modules (halo,
# post-softmax mask; they call register_op on import): op -> (implementing backends, default).
_PATTERNS: dict[str, tuple[tuple[str, ...], str]] = {op: (_IMPLEMENTATIONS[op], _DEFAULTS[op]) for op in OPS}

_SCOPED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    'zoo_attention_backend', default=None
)
# The (op, backend) list of the innermost record_ops() block, or None outside one.
_RECORDING: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    'zoo_attention_recording', default=None
)
# (op, setting) pairs already warned about: each fallback is reported once per process.
_WARNED: set[tuple[str, tuple[str, ...]]] = set()


class BackendNotSupported(ValueError):
    """The selected backend does not implement the op, or not for these arguments."""


class BackendUnavailable(RuntimeError):
    """The selected backend cannot run here: its package is missing or it needs another device."""


class BackendFallbackWarning(UserWarning):
    """A backend preferred by use_backend() or $ZOO_ATTENTION_BACKEND cannot run an op, which
    runs on another backend instead."""


# --- selection ------------------------------------------------------------------------------


def _quoted(names: Sequence[str]) -> str:
    return ', '.join(f"'{name}'" + (" (alias 'math')" if name == 'reference' else '') for name in names)


def _parse(setting: str, source: str) -> tuple[str, ...]:
    """Turn a backend setting (one name or a comma-separated list) into canonical names."""
    if not isinstance(setting, str):
        raise TypeError(f'attention backend from {source} must be a string, got {type(setting).__name__}')
    names = []
    for part in setting.split(','):
        name = part.strip().lower()
        name = _ALIASES.get(name, name)
        if name not in BACKENDS:
            raise ValueError(
                f'unknown attention backend {part.strip()!r} (from {source}); '
                f'valid names: {_quoted(BACKENDS)}'
            )
        names.append(name)
    return tuple(names)


def _check_op(op: str) -> str:
    if op not in _PATTERNS:
        raise ValueError(f"unknown attention op {op!r}; the ops are: {', '.join(_PATTERNS)}")
    return op


def register_op(op: str, implemented: Sequence[str], default: str) -> None:
    """Declare an op defined in its own module (with :func:`select_backend`), so that
    :func:`get_backend`, :func:`backend_status` and ``python -m zoo backends`` know it."""
    if default not in implemented or not set(implemented) <= set(BACKENDS):
        raise ValueError(f'{op}: backends {tuple(implemented)} with default {default!r} are not valid')
    _PATTERNS[op] = (tuple(implemented), default)


def _not_implemented(op: str, implemented: Sequence[str]) -> str:
    return f'does not implement {op} (the backends that do: {_quoted(implemented)})'


def _global_setting() -> tuple[str, tuple[str, ...]] | None:
    """The active global preference as (where it comes from, names), or None."""
    scoped = _SCOPED.get()
    if scoped is not None:
        return 'use_backend()', scoped
    env = os.environ.get(ENV_VAR, '').strip()
    if env:
        return f'${ENV_VAR}', _parse(env, f'${ENV_VAR}')
    return None


def _candidates(
    op: str, backend: str | None, implemented: Sequence[str], default: str,
    device: torch.device | None, warn: bool = True,
) -> tuple[str, ...]:
    """The backends to try for one call of ``op``, in order (see the module docstring).

    Args:
        op: The op's name, for messages.
        backend: The call's ``backend=`` argument (strict), or None.
        implemented: The backends that implement ``op``.
        default: The op's default backend; it always runs.
        device: The device of the call's tensors (None: any device of this machine).
        warn: Emit the fallback warning (a query such as :func:`get_backend` does not).

    Raises:
        BackendNotSupported: ``backend`` names no backend implementing ``op``.
        BackendUnavailable: ``backend``'s first name implementing ``op`` cannot run here.
    """
    if backend is not None:
        names = _parse(backend, 'the backend= argument')
        name = next((name for name in names if name in implemented), None)
        if name is None:
            raise BackendNotSupported(
                f'{op} is not implemented by backend {_quoted(names)} (from the backend= argument); '
                f'the backends that implement it: {_quoted(implemented)}'
            )
        problem = _unavailable_reason(name, device)
        if problem is not None:
            raise BackendUnavailable(f'{op}: {problem}')
        return (name,)
    setting = _global_setting()
    if setting is None:
        return (default,)
    source, names = setting
    runnable, skipped = [], []
    for name in names:
        problem = _not_implemented(op, implemented) if name not in implemented else _unavailable_reason(name, device)
        if problem is None:
            runnable.append(name)
        elif name in implemented:
            skipped.append((name, problem))  # it should have run: always worth saying why not
        else:
            skipped.append((name, None))  # said only if no listed backend runs the op
    falls_back = not runnable and default not in names
    if default not in runnable:
        runnable.append(default)
    reasons = [
        (name, problem or _not_implemented(op, implemented))
        for name, problem in skipped if problem is not None or falls_back
    ]
    if warn and reasons:
        _warn_fallback(op, source, names, reasons, runnable[0])
    return tuple(runnable)


def _warn_fallback(op: str, source: str, names: tuple[str, ...], reasons: list[tuple[str, str]],
                   instead: str) -> None:
    """Warn, once per op and setting, that the preferred backends could not run ``op``."""
    if (op, names) in _WARNED:
        return
    _WARNED.add((op, names))
    why = '; '.join(f"'{name}' {_strip_backend(op, name, reason)}" for name, reason in reasons)
    warnings.warn(
        f"zoo.attention: {source} prefers backend {_quoted(names)}, but for {op} {why}; "
        f"{op} runs on '{instead}' instead. A global setting is a preference: only an op's "
        f"backend= argument is strict. (Warned once per op and setting.)",
        BackendFallbackWarning,
        stacklevel=5,
    )


def _strip_backend(op: str, name: str, reason: str) -> str:
    """Word a reason to follow the backend's name: "the 'x' backend needs ..." -> "needs ..."."""
    reason = reason.removeprefix(f'{op}: ')
    stripped = reason.removeprefix(f"the '{name}' backend ")
    if stripped != reason or reason.startswith('does not implement'):
        return stripped
    return f'refused the call: {reason}'


def _record(op: str, name: str) -> None:
    recording = _RECORDING.get()
    if recording is not None:
        recording.append((op, name))


def select_backend(
    op: str, backend: str | None, implemented: Sequence[str], default: str,
    device: torch.device | None = None,
) -> str:
    """The selection rule (see the module docstring) for ``op`` implemented by the backends
    ``implemented``, for ops defined in their own modules (halo, post-softmax mask) whose
    backends accept every argument: the first backend it would try.

    Raises:
        BackendNotSupported, BackendUnavailable: only for a strict ``backend=`` argument.
    """
    name = _candidates(op, backend, implemented, default, device)[0]
    _record(op, name)
    return name


@contextlib.contextmanager
def record_ops() -> Iterator[list[tuple[str, str]]]:
    """Record the ``(op, backend)`` of every attention op called inside the block, in order.

    ``python -m zoo backends`` runs each family's smallest model once inside this block (on the
    meta device) to learn which ops the family uses. Ops reached through other ops (grouped
    attention through window and dense attention) are recorded as the ops they call.
    """
    calls: list[tuple[str, str]] = []
    token = _RECORDING.set(calls)
    try:
        yield calls
    finally:
        _RECORDING.reset(token)


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Prefer an attention backend for the ops called inside the ``with`` block.

    A preference, not a requirement: an op that the backend does not implement, cannot run
    here (package, device) or cannot run for the call's arguments runs on its default backend
    instead, with a :class:`BackendFallbackWarning` once per op and setting. Pass ``backend=``
    to an op to require a backend.

    The setting lives in a context variable: it nests (the innermost block wins), and threads
    and asyncio tasks each see their own. An op's ``backend=`` argument still takes precedence,
    and the ``ZOO_ATTENTION_BACKEND`` environment variable applies when no block is active.

    Args:
        name: A backend name (``'reference'``/``'math'``, ``'sdpa'``, ``'natten'``,
            ``'xformers'``, ``'triton'``), a comma-separated preference list such as
            ``'triton,sdpa'`` (each op uses the first listed backend that implements it and
            runs here), or None to clear an enclosing setting inside the block.

    Raises:
        ValueError: ``name`` is not a known backend (checked on entering the block).
    """
    names = None if name is None else _parse(name, 'use_backend()')
    token = _SCOPED.set(names)
    try:
        yield
    finally:
        _SCOPED.reset(token)


def get_backend(op: str, device: torch.device | str | None = None) -> str:
    """Return the backend a call of ``op`` would use now, without ``backend=``.

    Limits that depend on a call's arguments (e.g. NATTEN has no relative position bias) are
    not known here; such a call runs on the next backend of the setting, or the default.

    Args:
        op: One of :data:`OPS` or the ops registered by their own modules, e.g.
            ``'window_attention'`` or ``'halo_attention'``.
        device: The device of the call's tensors; None means any device of this machine.

    Raises:
        ValueError: unknown op, or an unknown name in the active setting.
    """
    implemented, default = _PATTERNS[_check_op(op)]
    device = torch.device(device) if isinstance(device, str) else device
    return _candidates(op, None, implemented, default, device, warn=False)[0]


def list_ops() -> tuple[str, ...]:
    """Every op with backends: :data:`OPS` and those defined in their own modules (halo,
    post-softmax mask), in registration order."""
    return tuple(_PATTERNS)


def default_backend(op: str) -> str:
    """The backend that runs ``op`` when nothing is set (``'sdpa'`` where it has a path)."""
    return _PATTERNS[_check_op(op)][1]


def backend_status(op: str) -> dict[str, str | None]:
    """Whether each backend can run ``op`` on this machine: None if it can, else why not.

    Args:
        op: One of :data:`OPS` or the ops registered by their own modules.

    Returns:
        ``{backend: reason or None}`` for every name of :data:`BACKENDS`, in that order; a
        reason reads after the backend's name ("needs xFormers, which is not installed: ...").
        Limits on a call's arguments are in :data:`CALL_LIMITS`.
    """
    implemented, _ = _PATTERNS[_check_op(op)]
    status: dict[str, str | None] = {}
    for name in BACKENDS:
        if name not in implemented:
            status[name] = f'cannot compute this pattern (it has no {op} path)'
        else:
            problem = _unavailable_reason(name, None)
            status[name] = None if problem is None else _strip_backend(op, name, problem)
    return status


def available_backends(op: str | None = None) -> list[str]:
    """List the backends that can run on this machine.

    Args:
        op: If given, only the backends that implement this op.

    Returns:
        Canonical backend names, in the order of :data:`BACKENDS`: those whose package is
        importable and, for the CUDA-only ones, with a CUDA device present (or, for
        ``'triton'``, with ``TRITON_INTERPRET=1`` set).
    """
    names = BACKENDS if op is None else _PATTERNS[_check_op(op)][0]
    return [name for name in BACKENDS if name in names and _unavailable_reason(name, None) is None]


# --- availability ---------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _import_problem(module: str, package: str, install: str, backend: str) -> str | None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split('.')[0] == module.split('.')[0]:
            return f"the '{backend}' backend needs {package}, which is not installed: {install}"
        return f"the '{backend}' backend could not import {package} ({exc}): {install}"
    except Exception as exc:  # a broken install fails with OSError, RuntimeError, ...
        return (
            f"the '{backend}' backend could not import {package} ({type(exc).__name__}: {exc}); "
            f"it must be built for torch {torch.__version__}: {install}"
        )
    return None


def _cuda_problem(backend: str, device: torch.device | None) -> str | None:
    if device is None:
        if torch.cuda.is_available():
            return None
        return f"the '{backend}' backend needs a CUDA device and this machine has none"
    if device.type == 'cuda':
        return None
    return f"the '{backend}' backend needs a CUDA device and the tensors are on {device.type}"


def _triton_problem(device: torch.device | None) -> str | None:
    problem = _import_problem('triton', 'Triton', 'pip install triton', 'triton')
    if problem is not None or (device is not None and device.type == 'cuda'):
        return problem
    hint = "; set TRITON_INTERPRET=1 to run its kernel in Triton's CPU interpreter (slow, for tests)"
    if not _env_flag('TRITON_INTERPRET'):
        problem = _cuda_problem('triton', device)
        return None if problem is None else problem + hint
    # Triton fixes a kernel's mode (compiled or interpreted) when the kernel is defined, i.e.
    # when our kernel module is first imported.
    kernels = sys.modules.get(f'{__package__}.triton_kernels')
    if device is not None and kernels is not None and not kernels.INTERPRETED:
        return (
            "the 'triton' kernel was already compiled for the GPU in this process, before "
            "TRITON_INTERPRET was set; set TRITON_INTERPRET=1 before the first triton call"
        )
    return None


def _unavailable_reason(backend: str, device: torch.device | None) -> str | None:
    """Why ``backend`` cannot run on ``device`` (None: on this machine at all), or None."""
    if backend == 'natten':
        return _import_problem('natten.functional', 'NATTEN', "pip install 'zoo[natten]'", backend)
    if backend == 'xformers':
        return _import_problem(
            'xformers.ops', 'xFormers', "pip install 'zoo[xformers]'", backend
        ) or _cuda_problem(backend, device)
    if backend == 'triton':
        return _triton_problem(device)
    return None


def _function(name: str, op: str) -> Callable[..., Tensor]:
    module = _LOADED.get(name)
    if module is None:  # imported once, on first use; a dict lookup keeps torch.compile tracing
        module = _LOADED[name] = importlib.import_module(f'{__package__}.{_MODULES[name]}')
    return getattr(module, op)


def _run(op: str, backend: str | None, device: torch.device, *args: object, **kwargs: object) -> Tensor:
    names = _candidates(op, backend, _IMPLEMENTATIONS[op], _DEFAULTS[op], device)
    # Only a preference has more than one candidate: a backend refusing these arguments (it
    # raises before computing anything) hands the call to the next one.
    for name, following in zip(names, names[1:]):
        try:
            out = _function(name, op)(*args, **kwargs)
        except (BackendNotSupported, BackendUnavailable) as exc:
            setting = _global_setting()
            _warn_fallback(op, setting[0], setting[1], [(name, str(exc))], following)
            continue
        _record(op, name)
        return out
    _record(op, names[-1])
    return _function(names[-1], op)(*args, **kwargs)


# --- validation -----------------------------------------------------------------------------


def _check_qkv(op: str, q: Tensor, k: Tensor, v: Tensor, layout: str, shared: int) -> None:
    """Check q, k, v against ``layout``; q must match k and v on their first ``shared`` dims."""
    rank = layout.count(',') + 1
    for name, t in (('q', q), ('k', k), ('v', v)):
        if not isinstance(t, Tensor):
            raise TypeError(f'{op}: {name} must be a torch.Tensor, got {type(t).__name__}')
        if t.dim() != rank:
            raise ValueError(f'{op}: {name} must be {rank}-D {layout}, got shape {tuple(t.shape)}')
        if not t.is_floating_point():
            raise TypeError(f'{op}: {name} must have a floating dtype, got {t.dtype}')
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f'{op}: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}')
    if not q.device == k.device == v.device:
        raise ValueError(f'{op}: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}')
    shapes = f'q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}'
    if not q.shape[:shared] == k.shape[:shared] == v.shape[:shared]:
        raise ValueError(f'{op}: q, k, v must agree on the first {shared} dims of {layout}; got {shapes}')
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f'{op}: k and v must agree on all dims but the last; got {shapes}')
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f'{op}: q and k must have the same head_dim; got {shapes}')


def _check_float_bias(op: str, name: str, bias: Tensor | None, q: Tensor) -> Tensor | None:
    """Check an additive bias; cast it to q's dtype (a float32 bias under autocast is common)."""
    if bias is None:
        return None
    if not isinstance(bias, Tensor) or not bias.is_floating_point():
        raise TypeError(f'{op}: {name} must be a floating tensor (additive bias), got {_describe(bias)}')
    if bias.device != q.device:
        raise ValueError(f'{op}: {name} is on {bias.device} but q is on {q.device}')
    return bias.to(q.dtype)


def _check_broadcast(op: str, name: str, t: Tensor, target: tuple[int, ...], layout: str) -> None:
    try:
        ok = t.dim() <= len(target) and torch.broadcast_shapes(t.shape, target) == target
    except (RuntimeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'{op}: {name} of shape {tuple(t.shape)} does not broadcast to {layout} = {target}')


def _describe(x: object) -> str:
    return f'a tensor of dtype {x.dtype}' if isinstance(x, Tensor) else type(x).__name__


def _resolve_scale(op: str, scale: float | None, q: Tensor) -> float:
    if scale is None:
        return q.shape[-1] ** -0.5
    if isinstance(scale, Tensor) or not isinstance(scale, (int, float)):
        raise TypeError(f'{op}: scale must be a Python number or None, got {type(scale).__name__}')
    return float(scale)


_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _positive_int(op: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{op}: {name} must be a positive int, got {value!r}')
    return value


# --- ops ------------------------------------------------------------------------------------


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_bias: Tensor | None = None,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> Tensor:
    """Multi-head softmax attention ``softmax(q k^T * scale + bias) v``.

    A query whose keys are all masked out gets a zero output from 'reference' and from SDPA's
    math and CPU kernels (other kernels may give NaN there).

    Args:
        q: Queries, (B, heads, Nq, head_dim).
        k: Keys, (B, heads, Nk, head_dim).
        v: Values, (B, heads, Nk, dv).
        attn_bias: Additive float bias broadcastable to (B, heads, Nq, Nk), cast to q's dtype.
        attn_mask: Bool mask broadcastable to (B, heads, Nq, Nk); True means "may attend".
        scale: Logit scale; None means ``head_dim ** -0.5``.
        is_causal: Query i attends keys j <= i only (top-left aligned when Nq != Nk).
        dropout_p: Dropout on the attention weights; pass 0 in eval mode.
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default) or ``'xformers'`` (CUDA only).

    Returns:
        (B, heads, Nq, dv).
    """
    op = 'dense_attention'
    _check_qkv(op, q, k, v, '(B, heads, N, head_dim)', shared=2)
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    attn_bias = _check_float_bias(op, 'attn_bias', attn_bias, q)
    if attn_bias is not None:
        _check_broadcast(op, 'attn_bias', attn_bias, target, '(B, heads, Nq, Nk)')
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
            raise TypeError(
                f'{op}: attn_mask must be a bool tensor (True = attend), got {_describe(attn_mask)}; '
                'pass an additive float mask as attn_bias'
            )
        if attn_mask.device != q.device:
            raise ValueError(f'{op}: attn_mask is on {attn_mask.device} but q is on {q.device}')
        _check_broadcast(op, 'attn_mask', attn_mask, target, '(B, heads, Nq, Nk)')
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f'{op}: dropout_p must be in [0, 1), got {dropout_p}')
    return _run(
        op, backend, q.device, q, k, v,
        attn_bias=attn_bias, attn_mask=attn_mask, scale=_resolve_scale(op, scale, q),
        is_causal=bool(is_causal), dropout_p=float(dropout_p),
    )


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window_size: int | tuple[int, int],
    *,
    attn_bias: Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Attention within non-overlapping windows of a feature map (Swin-style).

    Windows are numbered row-major over the (H / wh, W / ww) grid, tokens row-major within a
    window, as in Swin's window partition.

    Args:
        q: Queries, (B, heads, H, W, head_dim).
        k: Keys, (B, heads, H, W, head_dim).
        v: Values, (B, heads, H, W, dv).
        window_size: (wh, ww), or one int for square windows; H and W must be multiples.
        attn_bias: Additive bias over the wh*ww tokens of a window: (heads, N, N), the same for
            every window (relative position bias), or (nW, heads, N, N) per window (relative
            position bias plus shift mask); size-1 dims broadcast.
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'`` or ``'sdpa'`` (default).

    Returns:
        (B, heads, H, W, dv).
    """
    op = 'window_attention'
    _check_qkv(op, q, k, v, '(B, heads, H, W, head_dim)', shared=4)
    sizes = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
    if len(sizes) != 2:
        raise ValueError(f'{op}: window_size must be an int or (wh, ww), got {window_size!r}')
    wh, ww = (_positive_int(op, 'window_size', s) for s in sizes)
    H, W = q.shape[2], q.shape[3]
    if H % wh or W % ww:
        raise ValueError(
            f'{op}: the feature map H x W = {H} x {W} is not a multiple of the window {wh} x {ww}; '
            'the caller must pad it to a multiple first (e.g. with zoo.layers padding) and crop '
            'the output'
        )
    attn_bias = _check_float_bias(op, 'attn_bias', attn_bias, q)
    if attn_bias is not None:
        heads, n, n_windows = q.shape[1], wh * ww, (H // wh) * (W // ww)
        if attn_bias.dim() == 3:
            _check_broadcast(op, 'attn_bias', attn_bias, (heads, n, n), '(heads, N, N)')
        elif attn_bias.dim() == 4:
            _check_broadcast(op, 'attn_bias', attn_bias, (n_windows, heads, n, n), '(nW, heads, N, N)')
        else:
            raise ValueError(
                f'{op}: attn_bias must be (heads, N, N) or (nW, heads, N, N) with N = {n}, '
                f'nW = {n_windows}; got shape {tuple(attn_bias.shape)}'
            )
    return _run(
        op, backend, q.device, q, k, v, (wh, ww),
        attn_bias=attn_bias, scale=_resolve_scale(op, scale, q),
    )


def neighborhood_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kernel_size: int,
    *,
    dilation: int = 1,
    rpb: Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """2-D neighborhood attention with NATTEN's semantics.

    Each query attends to ``kernel_size x kernel_size`` keys around it, taken every
    ``dilation`` pixels; near the borders the window is shifted inwards (not shrunk), so every
    query always has ``kernel_size ** 2`` keys.

    Args:
        q: Queries, (B, heads, H, W, head_dim).
        k: Keys, (B, heads, H, W, head_dim).
        v: Values, (B, heads, H, W, dv).
        kernel_size: Odd window size; H and W must be at least ``kernel_size * dilation``.
        dilation: Stride between the pixels of a neighbourhood.
        rpb: Relative position bias (heads, 2 * kernel_size - 1, 2 * kernel_size - 1), indexed
            by (key row - query row) / dilation + kernel_size - 1 and likewise for columns.
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default; a dense attention with a
            (H*W)^2 mask, fine for moderate sizes) or ``'natten'`` (no rpb; forward only on CPU).

    Returns:
        (B, heads, H, W, dv).
    """
    op = 'neighborhood_attention'
    _check_qkv(op, q, k, v, '(B, heads, H, W, head_dim)', shared=4)
    kernel_size = _positive_int(op, 'kernel_size', kernel_size)
    dilation = _positive_int(op, 'dilation', dilation)
    if kernel_size % 2 == 0:
        raise ValueError(f'{op}: kernel_size must be odd, got {kernel_size}')
    H, W = q.shape[2], q.shape[3]
    if min(H, W) < kernel_size * dilation:
        raise ValueError(
            f'{op}: the feature map H x W = {H} x {W} is smaller than kernel_size * dilation = '
            f'{kernel_size * dilation}; the caller must pad it first (e.g. with zoo.layers padding)'
        )
    rpb = _check_float_bias(op, 'rpb', rpb, q)
    if rpb is not None:
        expected = (q.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1)
        if tuple(rpb.shape) != expected:
            raise ValueError(
                f'{op}: rpb must be (heads, 2k-1, 2k-1) = {expected}, got {tuple(rpb.shape)}'
            )
    return _run(
        op, backend, q.device, q, k, v, kernel_size,
        dilation=dilation, rpb=rpb, scale=_resolve_scale(op, scale, q),
    )


def routed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    region_index: Tensor,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """BiFormer's bi-level routing attention over gathered regions.

    Query region r of image b attends, with one softmax, to the concatenated tokens of the key
    regions ``region_index[b, r, 0], ..., region_index[b, r, topk - 1]``, in that order.

    Args:
        q: Queries grouped by region, (B, heads, R, Nq, head_dim).
        k: Keys grouped by region, (B, heads, R, Nk, head_dim).
        v: Values grouped by region, (B, heads, R, Nk, dv).
        region_index: (B, R, topk) integer indices in [0, R) of the key regions of each query
            region; converted to int64. Its range is checked on CPU only: reading the
            values on the host would synchronise a GPU on every call.
        scale: Logit scale; None means ``head_dim ** -0.5``.
        backend: ``'reference'``/``'math'``, ``'sdpa'`` (default) or ``'triton'`` (CUDA, or
            CPU with ``TRITON_INTERPRET=1``).

    Returns:
        (B, heads, R, Nq, dv).
    """
    op = 'routed_attention'
    _check_qkv(op, q, k, v, '(B, heads, R, N, head_dim)', shared=3)
    B, R = q.shape[0], q.shape[2]
    if not isinstance(region_index, Tensor) or region_index.dtype not in _INDEX_DTYPES:
        raise TypeError(f'{op}: region_index must be an integer tensor, got {_describe(region_index)}')
    if region_index.dim() != 3 or tuple(region_index.shape[:2]) != (B, R) or region_index.shape[2] < 1:
        raise ValueError(
            f'{op}: region_index must be (B, R, topk) = ({B}, {R}, topk >= 1), '
            f'got {tuple(region_index.shape)}'
        )
    if region_index.device != q.device:
        raise ValueError(f'{op}: region_index is on {region_index.device} but q is on {q.device}')
    region_index = region_index.long()
    # Read the values only where that is free: on CPU (not on a GPU, where it would sync, nor
    # on the meta device, which has none), in eager mode, and when there are any (batch 0).
    if region_index.device.type == 'cpu' and not torch.compiler.is_compiling() and region_index.numel():
        low, high = int(region_index.min()), int(region_index.max())
        if low < 0 or high >= R:
            raise ValueError(f'{op}: region_index values must be in [0, R) = [0, {R}), got [{low}, {high}]')
    return _run(op, backend, q.device, q, k, v, region_index, scale=_resolve_scale(op, scale, q))


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_norm: Tensor | None = None,
    k_norm: Tensor | None = None,
    eps: float = 1e-6,
    rank_augmentation: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Non-causal linear attention as RALA / RAVLT use it.

    ``out = (q @ (k^T v / Nk)) * z`` with ``z = 1 / (q_norm . mean_N(k_norm) + eps)``.

    With ``rank_augmentation`` (RALA's rank-augmented linear attention), every key j is first
    weighted by ``a_j = Nk * softmax_j(scale * mean_i(q_norm_i) . k_norm_j)``: ``k_j`` and
    ``k_norm_j`` both become ``a_j k_j`` / ``a_j k_norm_j``. Because RoPE rotates each token
    by itself, weighting the rotated keys equals rotating the weighted keys, as RALA does.

    Args:
        q: Queries (feature-mapped, e.g. ELU + 1 and possibly RoPE-rotated), (B, heads, Nq, d).
        k: Keys, (B, heads, Nk, d).
        v: Values, (B, heads, Nk, dv).
        q_norm: Queries for the normaliser, shaped like q; defaults to q. RAVLT passes the
            queries before RoPE here.
        k_norm: Keys for the normaliser, shaped like k; defaults to k.
        eps: Added to the normaliser's denominator.
        rank_augmentation: Weight the keys as described above (RALA); False keeps plain
            linear attention.
        scale: Logit scale of the key weighting; None means ``head_dim ** -0.5``. Unused
            without ``rank_augmentation``.
        backend: ``'reference'``/``'math'`` (default and only backend: the op is two small
            matmuls already, there is nothing for a fused path to save).

    Returns:
        (B, heads, Nq, dv).
    """
    op = 'linear_attention'
    _check_qkv(op, q, k, v, '(B, heads, N, d)', shared=2)
    for name, t, like in (('q_norm', q_norm, q), ('k_norm', k_norm, k)):
        if t is None:
            continue
        same = isinstance(t, Tensor) and (t.shape, t.dtype, t.device) == (like.shape, like.dtype, like.device)
        if not same:
            raise ValueError(
                f'{op}: {name} must be shaped like {name[0]} {tuple(like.shape)} with dtype {like.dtype} '
                f'on {like.device}, got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}'
            )
    return _run(
        op, backend, q.device, q, k, v,
        q_norm=q if q_norm is None else q_norm, k_norm=k if k_norm is None else k_norm, eps=float(eps),
        rank_augmentation=bool(rank_augmentation),
        scale=_resolve_scale(op, scale, q) if rank_augmentation else None,
    )

"""Attention backends: their names, the selection rule, availability probes, and the registry
of patterns (one :class:`Pattern` per op, defined by the op's own module).

Each op lives in the module of its pattern (``dense.py``, ``window.py``, ``grouped.py``,
``routed.py``, ``linear.py``, ``halo.py``, ``causal.py``, ``cross.py``) beside its reference
implementation and its fast paths; the module validates the inputs and hands the call to its
:class:`Pattern`, which picks the path with the one rule below and calls it. This module holds
no op code.

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
and if that backend then refuses the call's arguments (its ``can_run`` check gives a reason,
e.g. NATTEN with an attention bias) the next one runs. When a listed backend implements the op
but cannot run it, or no listed backend implements it, the op runs on its default instead,
with one :class:`BackendFallbackWarning` per op and setting that says why. A listed name that
does not implement the op is skipped silently when a later listed name does (that is what
lists are for).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

ENV_VAR = 'ZOO_ATTENTION_BACKEND'

BACKENDS: tuple[str, ...] = ('reference', 'sdpa', 'natten', 'xformers', 'triton')
_ALIASES = {'math': 'reference'}

# op -> its Pattern, in registration order (the pattern modules register on import).
_PATTERNS: dict[str, Pattern] = {}
# What a backend that runs an op here still refuses, depending on the call (its can_run check
# says so before computing; under a global preference the call then runs on the next backend
# or the default): (op, backend) -> the limits in words. Filled by the patterns.
CALL_LIMITS: dict[tuple[str, str], str] = {}

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


class Pattern:
    """One attention op and the paths (backends) that compute it.

    The op's module builds one at import, with direct references to its path functions, and
    calls it once the inputs are validated: ``PATTERN(backend, device, *args, **kwargs)``
    picks the backend by the selection rule (see the module docstring), asks that path's
    ``can_run`` check (if it has one) whether it computes these arguments exactly, and calls
    the path with the same arguments.

    Args:
        op: The public op's name, e.g. ``'window_attention'``.
        paths: ``{backend: function}``; every path takes the same (validated) arguments.
        default: The backend used when nothing is set; it must accept every valid call.
        can_run: ``{backend: check}`` for the paths that compute only some calls: the check
            takes the path's arguments and returns why the path cannot run them (a phrase that
            follows "the '<backend>' backend", e.g. ``'cannot apply an attention bias'``), or
            None when it can.
        limits: ``{backend: words}``: the same limits in words, for ``python -m zoo backends``.
    """

    def __init__(
        self,
        op: str,
        paths: Mapping[str, Callable[..., Any]],
        *,
        default: str,
        can_run: Mapping[str, Callable[..., str | None]] | None = None,
        limits: Mapping[str, str] | None = None,
    ) -> None:
        can_run, limits = dict(can_run or {}), dict(limits or {})
        if not set(paths) <= set(BACKENDS) or default not in paths or default in can_run:
            raise ValueError(f'{op}: paths {tuple(paths)} with default {default!r} are not valid')
        if not set(can_run) | set(limits) <= set(paths):
            raise ValueError(f'{op}: can_run/limits name backends without a path')
        self.op = op
        self.paths = dict(paths)
        self.default = default
        self.can_run = can_run
        self.implemented = tuple(name for name in BACKENDS if name in paths)
        _PATTERNS[op] = self
        for name, words in limits.items():
            CALL_LIMITS[(op, name)] = words

    def why_not(self, backend: str, device: torch.device | None, *args: Any, **kwargs: Any) -> str | None:
        """Why ``backend`` cannot compute this call (no path, package, device, arguments), or None."""
        (name,) = _parse(backend, 'the backend argument')
        if name not in self.paths:
            return _not_implemented(self.op, self.implemented)
        problem = _unavailable_reason(name, device)
        if problem is None and name in self.can_run:
            refusal = self.can_run[name](*args, **kwargs)
            problem = None if refusal is None else f"the '{name}' backend {refusal}"
        return problem

    def __call__(self, backend: str | None, device: torch.device, *args: Any, **kwargs: Any) -> Any:
        """Run the op with validated arguments on the backend the selection rule picks.

        Args:
            backend: The call's ``backend=`` argument (strict), or None.
            device: The device of the call's tensors.
            *args, **kwargs: The arguments of the paths.

        Raises:
            BackendNotSupported, BackendUnavailable: only for a strict ``backend=`` argument.
        """
        names = _candidates(self.op, backend, self.implemented, self.default, device)
        # Only a preference has more than one candidate: a backend refusing these arguments
        # (its can_run check, or the path itself, raises before computing) hands the call on.
        for name, following in zip(names, names[1:]):
            try:
                return self._run(name, args, kwargs)
            except (BackendNotSupported, BackendUnavailable) as exc:
                setting = _global_setting()
                _warn_fallback(self.op, setting[0], setting[1], [(name, str(exc))], following)
        return self._run(names[-1], args, kwargs)

    def _run(self, name: str, args: tuple, kwargs: dict) -> Any:
        check = self.can_run.get(name)
        if check is not None:
            refusal = check(*args, **kwargs)
            if refusal is not None:
                raise BackendNotSupported(f"{self.op}: the '{name}' backend {refusal}")
        out = self.paths[name](*args, **kwargs)
        _record(self.op, name)
        return out


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
        op: One of the ops of :func:`list_ops`, e.g.
            ``'window_attention'`` or ``'halo_attention'``.
        device: The device of the call's tensors; None means any device of this machine.

    Raises:
        ValueError: unknown op, or an unknown name in the active setting.
    """
    pattern = _PATTERNS[_check_op(op)]
    device = torch.device(device) if isinstance(device, str) else device
    return _candidates(op, None, pattern.implemented, pattern.default, device, warn=False)[0]


def list_ops() -> tuple[str, ...]:
    """Every attention op (pattern), in registration order: one module of ``zoo.attention``
    per pattern registers its ops on import."""
    return tuple(_PATTERNS)


def default_backend(op: str) -> str:
    """The backend that runs ``op`` when nothing is set (``'sdpa'`` where it has a path)."""
    return _PATTERNS[_check_op(op)].default


def backend_status(op: str) -> dict[str, str | None]:
    """Whether each backend can run ``op`` on this machine: None if it can, else why not.

    Args:
        op: One of the ops of :func:`list_ops`.

    Returns:
        ``{backend: reason or None}`` for every name of :data:`BACKENDS`, in that order; a
        reason reads after the backend's name ("needs xFormers, which is not installed: ...").
        Limits on a call's arguments are in :data:`CALL_LIMITS`.
    """
    implemented = _PATTERNS[_check_op(op)].implemented
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
    names = BACKENDS if op is None else _PATTERNS[_check_op(op)].implemented
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
    kernels = sys.modules.get('zoo.attention.triton_kernels')
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



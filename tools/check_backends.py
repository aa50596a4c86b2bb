"""Check every attention backend against its pattern's reference, and every family end to end.

Examples:
    python tools/check_backends.py                          # everything this machine can run
    python tools/check_backends.py --json model_cards/backends.json   # the cards' backend tables
    python tools/check_backends.py --ops window_attention --dtypes float32 --no-models
    TRITON_INTERPRET=1 python tools/check_backends.py --ops routed_attention   # (or --triton-interpret)

Patterns: every op of ``zoo.attention.list_ops()``, each with sample inputs built here (odd sizes
that exercise padding; with and without the op's bias, since some backends serve only
bias-free calls). Every backend that runs the op here is called with ``backend=NAME`` (strict)
in float32, bfloat16 and float16, forward and backward (gradients of every floating input:
q, k, v and any bias), and compared with the op's ``backend='reference'`` run in float32 on
the same (rounded) inputs. The error of a tensor is ``max |x - ref| / max |ref|`` (the max
abs error in units of the reference's largest entry); a run fails when it exceeds the
tolerance of its dtype. Each run is also timed (median of --repeats, CUDA events on a GPU).

Families: each family's smallest model (every variant with --all), random weights, one
random image, runs once with no backend setting (the default) and once under
``zoo.attention.use_backend(NAME)`` per backend; its features and logits are compared with the
default's (each by the measure below),
and ``zoo.attention.record_ops()`` says which ops ran on which backend and which fell back
(with the reason of the ``BackendFallbackWarning`` or of ``backend_status``).

What cannot run here (a backend's package or device missing, a backend without a path for a
pattern, a call a backend refuses such as NATTEN with a bias or its backward on CPU) is listed
at the top of the output with the reason. The exit status is 1 if any run disagrees beyond
tolerance or fails with an unexpected error. ``tools/model_cards.py`` renders the cards'
backend tables from the --json file (``make check-backends``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

SCHEMA = 1
DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
# Max |x - ref| / max |ref| allowed per dtype, for outputs and gradients of one op.
OP_TOLERANCE = {'float32': 1e-4, 'bfloat16': 5e-2, 'float16': 1e-2}
# The same measure on a whole model's features and logits (float32), against the default backend's.
MODEL_TOLERANCE = 1e-4
# Triton's CPU interpreter holds bfloat16 as raw 16-bit integers and its tl.dot multiplies those
# (https://github.com/triton-lang/triton/issues/11584): results are meaningless, not a kernel bug.
INTERPRETER_BF16 = ("Triton's CPU interpreter does not compute bfloat16 (its tl.dot multiplies the raw bits, "
                    'triton-lang/triton#11584); checked on a GPU')
# Every pattern the zoo is meant to have; one missing from list_ops() is reported, not failed.
EXPECTED_OPS = (
    'dense_attention', 'window_attention', 'grouped_attention', 'routed_attention', 'linear_attention',
    'halo_attention', 'causal_post_softmax_attention', 'gather_attention', 'infuse_attention',
)


# --- sample inputs --------------------------------------------------------------------------


@dataclass
class Sample:
    """One call of an op: ``op(*args, backend=..., **kwargs)``. Floating tensors among args
    and kwargs are float32 here; the runner casts them to the dtype checked and takes the
    gradient of each."""
    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    long: bool = False  # seconds on a CPU: left out by --quick


def _randn(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen)


def _qkv(gen: torch.Generator, lead: tuple[int, ...], d: int = 16, dv: int = 16,
         kv_lead: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    kv_lead = lead if kv_lead is None else kv_lead
    return _randn(gen, *lead, d), _randn(gen, *kv_lead, d), _randn(gen, *kv_lead, dv)


def dense_samples(gen: torch.Generator) -> list[Sample]:
    B, h, nq, nk = 2, 3, 37, 29
    q, k, v = _qkv(gen, (B, h, nq), kv_lead=(B, h, nk))
    mask = torch.rand(B, 1, nq, nk, generator=gen) > 0.3
    mask[..., 0] = True  # no query without a key: kernels differ on empty rows
    return [
        Sample('no bias', (q, k, v)),
        Sample('bias (B, heads, Nq, Nk)', (q, k, v), dict(attn_bias=_randn(gen, B, h, nq, nk))),
        Sample('bool mask', (q, k, v), dict(attn_mask=mask)),
        Sample('causal, bias (heads, Nq, Nk)', (q, k, v), dict(attn_bias=_randn(gen, h, nq, nk), is_causal=True)),
    ]


def window_samples(gen: torch.Generator) -> list[Sample]:
    B, h, H, W, wh, ww = 2, 2, 6, 10, 3, 5
    q, k, v = _qkv(gen, (B, h, H, W))
    n, windows = wh * ww, (H // wh) * (W // ww)
    return [
        Sample('no bias', (q, k, v, (wh, ww))),
        Sample('bias (heads, N, N)', (q, k, v, (wh, ww)), dict(attn_bias=_randn(gen, h, n, n))),
        Sample('bias (nW, heads, N, N)', (q, k, v, (wh, ww)), dict(attn_bias=_randn(gen, windows, h, n, n))),
    ]


def grouped_samples(gen: torch.Generator) -> list[Sample]:
    B, h, H, W = 2, 2, 7, 11  # not multiples of the groups: padded
    q, k, v = _qkv(gen, (B, h, H, W))
    bias = _randn(gen, h, 12, 12)
    # Maps that are a multiple of the block (no padding): bias-free calls NATTEN serves too.
    q6, k6, v6 = _qkv(gen, (B, h, 6, 8))
    q12, k12, v12 = _qkv(gen, (B, h, 12, 8))
    return [
        Sample('6x8 map, groups 3x4, no bias', (q6, k6, v6, (3, 4))),
        Sample('12x8 map, groups 3x4 interval 2, no bias', (q12, k12, v12, (3, 4)), dict(interval=2)),
        Sample('groups 3x4, no bias', (q, k, v, (3, 4))),
        Sample('groups 3x4, bias', (q, k, v, (3, 4)), dict(attn_bias=bias)),
        Sample('groups 3x4 interval 2, no bias', (q, k, v, (3, 4)), dict(interval=2)),
        Sample('groups 3x4 interval 2, bias', (q, k, v, (3, 4)), dict(interval=2, attn_bias=bias)),
    ]


def routed_samples(gen: torch.Generator) -> list[Sample]:
    B, h, R, nq, nk, topk = 2, 2, 6, 5, 7, 3
    q, k, v = _qkv(gen, (B, h, R, nq), kv_lead=(B, h, R, nk))
    def routes(topk: int) -> Tensor:
        return torch.stack([torch.randperm(R, generator=gen)[:topk] for _ in range(B * R)]).reshape(B, R, topk)

    return [Sample('topk 3 of 6 regions', (q, k, v, routes(topk))),
            Sample('topk 5 of 6 regions (dense routing)', (q, k, v, routes(5)))]


def linear_samples(gen: torch.Generator) -> list[Sample]:
    B, h, n = 2, 2, 37
    q, k, v = _qkv(gen, (B, h, n))
    q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1  # positive features, as RALA's
    q_norm = torch.nn.functional.elu(_randn(gen, B, h, n, 16)) + 1
    k_norm = torch.nn.functional.elu(_randn(gen, B, h, n, 16)) + 1
    return [
        Sample('plain', (q, k, v)),
        Sample('rank augmentation, separate norms', (q, k, v),
               dict(q_norm=q_norm, k_norm=k_norm, rank_augmentation=True)),
    ]


def halo_samples(gen: torch.Generator) -> list[Sample]:
    B, h, H, W, block, halo = 2, 2, 11, 9, 4, 1  # not multiples of the block: padded
    _, k, v = _qkv(gen, (B, h, H, W))
    win = block + 2 * halo
    rel_h, rel_w = _randn(gen, 2 * win - 1, 16) * 0.3, _randn(gen, 2 * win - 1, 16) * 0.3
    q1 = _randn(gen, B, h, H, W, 16)
    q2 = _randn(gen, B, h, -(-H // 2), -(-W // 2), 16)
    return [
        Sample('no relative logits', (q1, k, v, block, halo)),
        Sample('relative logits', (q1, k, v, block, halo), dict(rel_h=rel_h, rel_w=rel_w)),
        Sample('query stride 2, relative logits, scaled', (q2, k, v, block, halo),
               dict(query_stride=2, rel_h=rel_h, rel_w=rel_w, rel_scaled=True)),
    ]


def causal_post_softmax_samples(gen: torch.Generator) -> list[Sample]:
    q, k, v = _qkv(gen, (2, 2, 37))
    # Long enough that the weights (1 x 1 x N x N) exceed 32 MiB even in 16 bits: the sdpa
    # backend then takes its fused path instead of the materialised formula.
    long_q, long_k, long_v = _qkv(gen, (1, 1, 4200))
    return [Sample('soft rate 0', (q, k, v)), Sample('soft rate 0.3', (q, k, v), dict(soft_rate=0.3)),
            Sample('soft rate 0.3, 4200 tokens', (long_q, long_k, long_v), dict(soft_rate=0.3), long=True)]


def gather_samples(gen: torch.Generator) -> list[Sample]:
    q, k, v = _qkv(gen, (2, 3, 9), dv=24, kv_lead=(2, 3, 37))
    return [Sample('9 queries over 37 keys', (q, k, v))]


def infuse_samples(gen: torch.Generator) -> list[Sample]:
    weights = torch.softmax(_randn(gen, 2, 3, 9, 37), dim=-1)
    return [Sample('37 tokens from 9', (weights, _randn(gen, 2, 3, 9, 24)))]


# One builder per op name: an op of list_ops() without one stops the tool (see check_builders).
SAMPLE_BUILDERS: dict[str, Callable[[torch.Generator], list[Sample]]] = {
    'dense_attention': dense_samples,
    'window_attention': window_samples,
    'grouped_attention': grouped_samples,
    'routed_attention': routed_samples,
    'linear_attention': linear_samples,
    'halo_attention': halo_samples,
    'causal_post_softmax_attention': causal_post_softmax_samples,
    'gather_attention': gather_samples,
    'infuse_attention': infuse_samples,
}


class MissingSampleBuilder(RuntimeError):
    """``zoo.attention.list_ops()`` has an op that this tool has no sample inputs for."""


def check_builders(ops: Sequence[str]) -> None:
    """Refuse to run when an op has no sample builder: a new pattern must not be skipped silently."""
    missing = [op for op in ops if op not in SAMPLE_BUILDERS]
    if missing:
        raise MissingSampleBuilder(
            f'zoo.attention.list_ops() has op(s) {missing} without sample inputs in '
            f'tools/check_backends.py: add a builder to SAMPLE_BUILDERS (shapes with padding, '
            f'with and without bias) so that their backends are checked')


# --- one op ---------------------------------------------------------------------------------


def _cast(x: Any, dtype: torch.dtype, device: torch.device, grad: bool) -> Any:
    if not isinstance(x, Tensor):
        return x
    x = x.to(device)
    if x.is_floating_point():
        x = x.to(dtype).detach().requires_grad_(grad)
    return x


def _outputs(out: Tensor | tuple) -> list[Tensor]:
    return [out] if isinstance(out, Tensor) else [t for t in out if isinstance(t, Tensor)]


def _leaves(sample_args: tuple, sample_kwargs: dict) -> dict[str, Tensor]:
    named = {f'arg{i}': a for i, a in enumerate(sample_args)} | dict(sample_kwargs)
    names = {'arg0': 'q', 'arg1': 'k', 'arg2': 'v'}
    return {names.get(key, key): t for key, t in named.items()
            if isinstance(t, Tensor) and t.is_floating_point() and t.requires_grad}


def _error(x: Tensor, ref: Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|), in float64; inf where x is not finite."""
    x, ref = x.detach().double(), ref.detach().double()
    if not torch.isfinite(x).all():
        return math.inf, math.inf
    abs_err = (x - ref).abs().max().item() if x.numel() else 0.0
    return abs_err, abs_err / max(ref.abs().max().item() if ref.numel() else 0.0, 1e-12)


class _Timer:
    """Median wall time of a callable, synchronising a GPU around each run."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device, self.repeats = device, repeats

    def __call__(self, fn: Callable[[], object]) -> float:
        times = []
        for _ in range(self.repeats):
            if self.device.type == 'cuda':
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)


def _run_call(fn: Callable, sample: Sample, backend: str, dtype: torch.dtype, device: torch.device,
              grad: bool, grad_seed: int) -> tuple[list[Tensor], dict[str, Tensor] | None, Callable, Callable]:
    """Run ``sample`` once; return outputs, gradients (None without ``grad``) and two closures
    that repeat the forward and the forward + backward for timing."""
    args = tuple(_cast(a, dtype, device, grad) for a in sample.args)
    kwargs = {key: _cast(a, dtype, device, grad) for key, a in sample.kwargs.items()}

    def forward() -> list[Tensor]:
        return _outputs(fn(*args, backend=backend, **kwargs))

    if not grad:
        with torch.no_grad():
            outs = forward()
        def forward_no_grad() -> None:
            with torch.no_grad():
                forward()

        return outs, None, forward_no_grad, None
    outs = forward()
    gen = torch.Generator().manual_seed(grad_seed)
    grad_outs = [torch.randn(o.shape, generator=gen).to(device, o.dtype) for o in outs]
    leaves = _leaves(args, kwargs)
    grads = torch.autograd.grad(outs, list(leaves.values()), grad_outs, allow_unused=True)

    def forward_backward() -> None:
        torch.autograd.grad(forward(), list(leaves.values()), grad_outs, allow_unused=True)

    def forward_only() -> None:
        with torch.no_grad():
            forward()

    return ([o.detach() for o in outs], {name: g for name, g in zip(leaves, grads) if g is not None},
            forward_only, forward_backward)


def check_op(op: str, backends: Sequence[str], dtypes: Sequence[str], device: torch.device,
             repeats: int, quick: bool = False) -> dict[str, Any]:
    """Every backend of ``backends`` x dtype x sample of ``op`` against the float32 reference
    (without the long samples if ``quick``).

    Returns:
        ``{'default': name, 'backends': {backend: {'status': 'ran' | 'skipped' | 'failed',
        'reason': why skipped (or None), 'runs': [per dtype and sample: status, reason,
        forward {max_abs, max_rel}, grads {input: {max_abs, max_rel}}, backward (None or why
        skipped), time_ms {forward, forward_backward}, passed]}}}``.
    """
    from zoo import attention
    from zoo.attention import BackendNotSupported, BackendUnavailable

    fn = getattr(attention, op)
    status = attention.backend_status(op)
    timer = _Timer(device, repeats)
    samples = [s for s in SAMPLE_BUILDERS[op](torch.Generator().manual_seed(0)) if not (quick and s.long)]
    result: dict[str, Any] = {'default': attention.default_backend(op), 'backends': {}}
    truths: dict[tuple[str, int], tuple[list[Tensor], dict[str, Tensor]]] = {}
    for backend in backends:
        reason = status.get(backend, 'is not a backend of this zoo version')
        if reason is not None:
            result['backends'][backend] = {'status': 'skipped', 'reason': reason, 'runs': []}
            continue
        runs = []
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            for index, sample in enumerate(samples):
                run: dict[str, Any] = {'dtype': dtype_name, 'sample': sample.label, 'status': 'ran',
                                       'reason': None, 'backward': None}
                runs.append(run)
                if backend == 'triton' and device.type == 'cpu' and dtype == torch.bfloat16:
                    run.update(status='skipped', reason=INTERPRETER_BF16)
                    continue
                try:
                    key = (dtype_name, index)
                    if key not in truths:  # the reference in float32 on this dtype's rounded inputs
                        rounded = Sample(sample.label, tuple(_cast(a, dtype, device, False) for a in sample.args),
                                         {k: _cast(a, dtype, device, False) for k, a in sample.kwargs.items()})
                        outs, grads, _, _ = _run_call(fn, rounded, 'reference', torch.float32, device, True, index)
                        truths[key] = (outs, grads)
                    ref_outs, ref_grads = truths[key]
                    try:
                        outs, grads, time_fwd, time_bwd = _run_call(fn, sample, backend, dtype, device, True, index)
                    except (BackendNotSupported, BackendUnavailable) as exc:
                        # Refused with gradients (e.g. no backward on this device): forward only.
                        # A refusal of the forward as well (e.g. a bias) skips the call.
                        outs, grads, time_fwd, time_bwd = _run_call(fn, sample, backend, dtype, device, False, index)
                        run['backward'] = _short(exc, op)
                except (BackendNotSupported, BackendUnavailable) as exc:
                    run.update(status='skipped', reason=_short(exc, op))
                    continue
                except Exception as exc:  # a real failure: reported, and the check fails
                    run.update(status='failed', reason=f'{type(exc).__name__}: {exc}', passed=False,
                               traceback=traceback.format_exc(limit=4))
                    continue
                tol = OP_TOLERANCE[dtype_name]
                errors = [_error(o, r) for o, r in zip(outs, ref_outs)]
                run['forward'] = {'max_abs': max(e[0] for e in errors), 'max_rel': max(e[1] for e in errors)}
                run['grads'] = {}
                if grads is not None:
                    for name, ref in ref_grads.items():
                        got = grads.get(name)
                        err = _error(got, ref) if got is not None else (math.inf, math.inf)
                        run['grads'][name] = {'max_abs': err[0], 'max_rel': err[1]}
                rels = [run['forward']['max_rel']] + [g['max_rel'] for g in run['grads'].values()]
                run['passed'] = len(outs) == len(ref_outs) and all(r <= tol for r in rels)
                if not run['passed']:
                    run['status'] = 'failed'
                    run['reason'] = f'max error {max(rels):.3g} > tolerance {tol:g}'
                run['time_ms'] = {'forward': timer(time_fwd),
                                  'forward_backward': timer(time_bwd) if time_bwd is not None else None}
        states = {r['status'] for r in runs}
        entry = {'status': 'failed' if 'failed' in states else 'ran' if 'ran' in states else 'skipped',
                 'reason': None, 'runs': runs}
        if entry['status'] == 'skipped':
            entry['reason'] = '; '.join(sorted({r['reason'] for r in runs}))
        result['backends'][backend] = entry
    return result


def _short(exc: Exception, op: str) -> str:
    return str(exc).removeprefix(f'{op}: ')


# --- families -------------------------------------------------------------------------------


def check_model(name: str, backends: Sequence[str], device: torch.device, img_size: int | None) -> dict[str, Any]:
    """One model's features and logits under each backend preference against the default's, with the ops
    each preference ran on which backend and those that fell back (and why)."""
    import timm
    from zoo import attention

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    _wake_branches(model)
    model = model.to(device)
    size = model.pretrained_cfg['input_size'][1:] if img_size is None else (img_size, img_size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)

    def run(setting: str | None) -> tuple[tuple[Tensor, Tensor], list[tuple[str, str]], list[str]]:
        scope = attention.use_backend(setting) if setting else contextlib.nullcontext()
        with warnings.catch_warnings(record=True) as caught, attention.record_ops() as calls, scope, torch.no_grad():
            warnings.simplefilter('always', attention.BackendFallbackWarning)
            features = model.forward_features(x)
            logits = model.forward_head(features)
        # The features too: a freshly initialised head may be all zeros (timm zero-inits some).
        return (features.float(), logits.float()), calls, [str(w.message) for w in caught
                                       if issubclass(w.category, attention.BackendFallbackWarning)]

    default, calls, _ = run(None)
    result: dict[str, Any] = {'input_size': list(size), 'default': _ran(calls), 'backends': {}}
    for backend in backends:
        entry: dict[str, Any] = {}
        try:
            outputs, calls, messages = run(backend)
        except Exception as exc:  # a preference must never break a model: this is a failure
            result['backends'][backend] = {'status': 'failed', 'reason': f'{type(exc).__name__}: {exc}',
                                           'passed': False}
            continue
        ran = _ran(calls)
        entry['ran'] = ran
        entry['fell_back'] = {}
        for op, used in ran.items():
            if backend not in used:
                why = attention.backend_status(op).get(backend) or _warning_reason(messages, op, backend)
                entry['fell_back'][op] = {'to': used, 'why': why}
        errors = [_error(out, ref) for out, ref in zip(outputs, default)]
        abs_err, rel_err = max(e[0] for e in errors), max(e[1] for e in errors)
        entry.update(max_abs=abs_err, max_rel=rel_err, passed=rel_err <= MODEL_TOLERANCE)
        on_backend = [op for op, used in ran.items() if backend in used]
        entry['status'] = 'failed' if not entry['passed'] else 'ran' if on_backend else 'fell back'
        if not entry['passed']:
            entry['reason'] = f'features/logits differ from the default by {rel_err:.3g} > {MODEL_TOLERANCE:g}'
        result['backends'][backend] = entry
    return result


@torch.no_grad()
def _wake_branches(model: torch.nn.Module) -> None:
    """Make every branch reach the output: a fresh model zero-initialises some residual branches
    (the last norm of timm's bottlenecks), scales others by a tiny layer scale and may have an
    all-zero head, which would hide an attention backend's error from the logits. Vector-shaped
    weights (norms, layer scales) under 1e-3 become 1; all-zero matrices are drawn from
    N(0, 0.02)."""
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if name.endswith('bias') or not p.is_floating_point():
            continue
        if p.squeeze().dim() <= 1 and p.numel() > 1 and p.abs().max() < 1e-3:
            p.fill_(1.0)
        elif p.squeeze().dim() >= 2 and not p.any():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def _ran(calls: list[tuple[str, str]]) -> dict[str, list[str]]:
    ran: dict[str, list[str]] = {}
    for op, backend in calls:
        if backend not in ran.setdefault(op, []):
            ran[op].append(backend)
    return {op: sorted(names) for op, names in sorted(ran.items())}


def _warning_reason(messages: list[str], op: str, backend: str) -> str:
    for message in messages:
        if f'for {op} ' in message:
            found = re.search(rf"for {op} (.*?); {op} runs on", message)
            return found.group(1) if found else message
    return f"refused the model's calls (a call limit: {_call_limit(op, backend)})"


def _call_limit(op: str, backend: str) -> str:
    from zoo import attention
    return getattr(attention, 'CALL_LIMITS', {}).get((op, backend), 'see backend_status')


# --- report ---------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {'torch': torch.__version__, 'python': platform.python_version(),
                            'device': device.type, 'cuda_device': None,
                            'triton_interpret': os.environ.get('TRITON_INTERPRET', '') == '1'}
    if device.type == 'cuda':
        info['cuda_device'] = torch.cuda.get_device_name(device)
    for package in ('natten', 'xformers', 'triton', 'timm'):
        try:
            info[package] = __import__(package).__version__
        except Exception:  # not installed or broken: the backend status says which
            info[package] = None
    return info


def summarise(doc: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(skipped, ran, failures) lines of a result document."""
    skipped, ran, failures = [], [], []
    for op, note in doc.get('absent_ops', {}).items():
        skipped.append(f'{op}: {note}')
    for op, res in doc['ops'].items():
        no_path = [b for b, e in res['backends'].items()
                   if e['status'] == 'skipped' and 'has no' in (e['reason'] or '') and 'path' in e['reason']]
        if no_path:
            skipped.append(f"{op}: no path in {', '.join(no_path)}")
        for backend, entry in res['backends'].items():
            if backend in no_path:
                continue
            if entry['status'] == 'skipped':
                skipped.append(f'{op} / {backend}: {entry["reason"]}')
                continue
            refused = sorted({f"{r['sample']}: {r['reason']}" for r in entry['runs'] if r['status'] == 'skipped'})
            skipped += [f'{op} / {backend} / {line}' for line in _dedupe_reasons(refused)]
            no_backward = sorted({r['backward'] for r in entry['runs'] if r['backward']})
            skipped += [f'{op} / {backend}: backward not checked: {why}' for why in no_backward]
            for r in entry['runs']:
                if r['status'] == 'failed':
                    failures.append(f"{op} / {backend} / {r['dtype']} / {r['sample']}: {r['reason']}")
            done = [r for r in entry['runs'] if r['status'] != 'skipped']
            if done:
                per_dtype = []
                for dtype in dict.fromkeys(r['dtype'] for r in done):
                    fwd = [r['forward']['max_rel'] for r in done if r['dtype'] == dtype and 'forward' in r]
                    grads = [g['max_rel'] for r in done if r['dtype'] == dtype for g in r.get('grads', {}).values()]
                    per_dtype.append(f'{dtype} fwd ' + (f'{max(fwd):.1e}' if fwd else 'failed')
                                     + (f' grad {max(grads):.1e}' if grads else ''))
                ran.append(f'{op} / {backend}: {len(done)} runs, max error ' + ', '.join(per_dtype))
    for family, fam in doc.get('families', {}).items():
        for model, res in fam['models'].items():
            if 'error' in res:
                failures.append(f'{family} / {model}: {res["error"]}')
                continue
            if not res['default']:
                skipped.append(f'{family} ({model}): no zoo.attention op, no backend setting changes it')
                continue
            for backend, entry in res['backends'].items():
                if not entry.get('passed', False):
                    failures.append(f"{family} / {model} / {backend}: {entry.get('reason')}")
                    continue
                on = [op for op, used in entry['ran'].items() if backend in used]
                fell = [f"{op} -> {'/'.join(f['to'])}" for op, f in entry['fell_back'].items()]
                ran.append(f"{family} ({model}) under {backend}: {', '.join(on) or 'no op'} on {backend}"
                           + (f"; fell back: {', '.join(fell)}" if fell else '')
                           + f"; vs default {entry['max_rel']:.1e}")
    return skipped, ran, failures


def _dedupe_reasons(lines: list[str]) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for line in lines:
        sample, reason = line.split(': ', 1)
        by_reason.setdefault(reason, []).append(sample)
    return [f"{', '.join(samples)}: {reason}" for reason, samples in by_reason.items()]


def report(doc: dict[str, Any]) -> str:
    skipped, ran, failures = summarise(doc)
    machine = doc['machine']
    where = machine['cuda_device'] or f"{machine['device']} (no CUDA device)"
    lines = [f"check_backends on {where}, torch {machine['torch']}, dtypes {', '.join(doc['dtypes'])}",
             f'Skipped ({len(skipped)}):', *[f'  {s}' for s in skipped],
             f'Ran ({len(ran)}):', *[f'  {r}' for r in ran]]
    lines += ([f'FAILED ({len(failures)}):', *[f'  {f}' for f in failures]] if failures
              else ['All runs agree within tolerance.'])
    return '\n'.join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--ops', nargs='+', metavar='OP', help='only these ops (default: every op of list_ops())')
    parser.add_argument('--backends', nargs='+', metavar='NAME', help='only these backends (default: all)')
    parser.add_argument('--dtypes', nargs='+', choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument('--families', nargs='+', metavar='FAMILY', help='only these families (default: all)')
    parser.add_argument('--all', action='store_true', help='every variant of each family, not only the smallest')
    parser.add_argument('--no-models', action='store_true', help='only the ops')
    parser.add_argument('--no-ops', action='store_true', help='only the families')
    parser.add_argument('--img-size', type=int, help="the models' input side (default: each model's own)")
    parser.add_argument('--quick', action='store_true',
                        help='leave out the long samples (the fused path of causal_post_softmax_attention)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per call (median)')
    parser.add_argument('--device', help='cuda or cpu (default: cuda if available)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--triton-interpret', action='store_true',
                        help="run the 'triton' backend in Triton's CPU interpreter (sets TRITON_INTERPRET=1; slow)")
    parser.add_argument('--json', type=Path, metavar='OUT', help='write the results here')
    return parser.parse_args(argv)


def run_checks(args: argparse.Namespace) -> dict[str, Any]:
    if args.triton_interpret:
        os.environ['TRITON_INTERPRET'] = '1'  # before the kernel module is imported
    from zoo import attention
    from zoo.registry import list_families, list_models, smallest_variant

    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    env_setting = os.environ.pop(attention.ENV_VAR, None)  # the default must be the default
    available = attention.list_ops()
    check_builders(available)
    ops = args.ops or list(available)
    unknown = [op for op in ops if op not in available]
    if unknown:
        raise SystemExit(f'not ops of zoo.attention.list_ops(): {unknown}; the ops are {list(available)}')
    backends = args.backends or list(attention.BACKENDS)
    doc: dict[str, Any] = {
        'schema': SCHEMA, 'argv': args.argv,
        'machine': machine_info(device), 'dtypes': list(args.dtypes),
        'tolerances': {'op_max_rel': {d: OP_TOLERANCE[d] for d in args.dtypes}, 'model_max_rel': MODEL_TOLERANCE},
        'ignored_env_setting': env_setting, 'quick': args.quick,
        'absent_ops': {op: 'not in zoo.attention.list_ops() in this version (not checked)'
                       for op in EXPECTED_OPS if op not in available and args.ops is None},
        'ops': {}, 'families': {},
    }
    if not args.no_ops:
        for op in ops:
            doc['ops'][op] = check_op(op, backends, args.dtypes, device, args.repeats, args.quick)
    if not args.no_models:
        for family in args.families or list_families():
            names = list_models(family) if args.all else [smallest_variant(family)]
            fam: dict[str, Any] = {'models': {}}
            for name in names:
                try:
                    fam['models'][name] = check_model(name, backends, device, args.img_size)
                except Exception as exc:  # building or the default run failed: report, go on
                    fam['models'][name] = {'error': f'{type(exc).__name__}: {exc}'}
            doc['families'][family] = fam
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        doc = run_checks(args)
    except MissingSampleBuilder as exc:
        print(f'check_backends: {exc}', file=sys.stderr)
        return 2
    print(report(doc))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, sort_keys=False) + '\n')
        print(f'wrote {args.json}')
    return 1 if summarise(doc)[2] else 0


if __name__ == '__main__':
    sys.exit(main())

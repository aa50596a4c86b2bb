"""Keep freed activation memory in the process instead of returning it to the kernel (glibc).

PyTorch's CPU allocator has no cache: every tensor is a ``malloc`` and every free a ``free``.
glibc serves blocks above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
unmaps them on free, and trims the heap top above its trim threshold. The next forward then
touches new pages again, and the kernel zeroes each one on its first write. For the
high-resolution stages of a CNN or a hierarchical transformer at batch 32, that is hundreds of
thousands of page faults per forward: on this project's benchmark machine `van_b0` spent half
of a batch-32 forward in the kernel (1.62 s, 0.82 s of it system time, 450k minor faults),
and 0.80 s with freed memory kept (no faults after the first forward).

:func:`retain_freed_memory` switches glibc to serving every block from the heap and never
trimming it, so that freed memory is reused: after the first few forwards (while the heap
grows to the forward's pattern of sizes) a forward causes no page faults. The cost is that the
process keeps its peak resident memory until it exits, which is what a long-running
inference or benchmark process wants, and what PyTorch's CUDA allocator does on GPUs. The
same effect without code: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the
environment, or preloading jemalloc / tcmalloc (PyTorch's CPU performance guide).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
import warnings

__all__ = ['release_freed_memory', 'retain_freed_memory']

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2 ** 31 - 1


def _glibc() -> tuple[ctypes.CDLL | None, str]:
    """glibc, or None and why not (another C library, or glibc cannot be loaded)."""
    system, libc_name = platform.system(), platform.libc_ver()[0]
    if system != 'Linux' or libc_name != 'glibc':
        return None, (f'only glibc can be tuned this way (this is {system} with '
                      f'{libc_name or "an unknown C library"})')
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6'), ''
    except OSError as err:
        return None, f'cannot load glibc ({err})'


def release_freed_memory() -> bool:
    """Give the memory this process has freed but glibc still holds back to the kernel (``malloc_trim``).

    After a large training step, freed activations below glibc's (growing) mmap threshold stay
    in the heap and count in the resident set. A parent that then starts a child to measure
    a step of its own (``zoo.train_profiling.train_peak_memory``) would hold that memory
    beside the child's. Returns whether glibc was called (False elsewhere: nothing to do).
    """
    libc, _ = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (process-wide; lasts until the process exits).

    Call it once at the start of an inference or benchmark process. It does not change any
    result, only where tensors' memory comes from; see the module docstring for the cost.

    Returns:
        True when applied; False (with a warning saying why) where the C library is not
        glibc, e.g. on macOS, Windows or musl, where the allocator is different anyway, or
        where glibc cannot be loaded or refuses the settings.
    """
    libc, why_not = _glibc()
    if libc is None:
        warnings.warn(f'retain_freed_memory: {why_not}; nothing changed', stacklevel=2)
        return False
    # blocks of any size from the heap, and never give the heap top back
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    if not ok:
        warnings.warn('retain_freed_memory: glibc refused mallopt(M_MMAP_MAX / M_TRIM_THRESHOLD)', stacklevel=2)
    return ok

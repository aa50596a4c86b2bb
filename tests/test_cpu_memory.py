"""zoo.cpu_memory: with freed memory retained, a repeated large allocation stops page-faulting.

Counted with getrusage's minor faults in a fresh interpreter (the setting is process-wide).
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Allocate and free a 64 MiB tensor (above glibc's largest mmap threshold, 32 MiB) ten times,
# writing every page; report the minor faults of each round. With memory retained the heap
# still grows in the first rounds (an aligned request can be a little larger than the block
# freed before it, until freed neighbours have merged), so the steady state is what counts.
_CHILD = '''
import json, resource, sys, torch
sys.path.insert(0, {root!r})
if {retain}:
    from zoo.cpu_memory import retain_freed_memory
    assert retain_freed_memory()
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2 ** 20)
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
'''


def _faults(retain: bool) -> list[int]:
    proc = subprocess.run([sys.executable, '-c', _CHILD.format(root=str(ROOT), retain=retain)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt tuning is glibc-only')
def test_retained_memory_is_reused_without_page_faults() -> None:
    pages = 64 * 2 ** 20 // 4096
    default, retained = _faults(False), _faults(True)
    assert min(default[-4:]) > pages // 2  # every round maps and touches fresh pages
    assert sum(retained[-4:]) < pages // 50  # the freed memory is reused


def test_non_glibc_warns_and_changes_nothing(monkeypatch) -> None:
    import zoo.cpu_memory as cpu_memory
    monkeypatch.setattr(cpu_memory.platform, 'libc_ver', lambda: ('', ''))
    with pytest.warns(UserWarning, match='only glibc'):
        assert cpu_memory.retain_freed_memory() is False


# Many 1 MiB tensors (below glibc's mmap threshold: heap blocks), all but the last freed; the
# resident set before and after release_freed_memory.
_RELEASE_CHILD = '''
import json, sys, torch
sys.path.insert(0, {root!r})
from zoo.cpu_memory import release_freed_memory

def rss_mib():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2 ** 20

blocks = [torch.ones(2 ** 18) for _ in range(400)]
del blocks[:-1]
held = rss_mib()
assert release_freed_memory()
print(json.dumps([held, rss_mib()]))
'''


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='malloc_trim is glibc-only')
def test_release_gives_freed_heap_memory_back() -> None:
    proc = subprocess.run([sys.executable, '-c', _RELEASE_CHILD.format(root=str(ROOT))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    held, released = json.loads(proc.stdout.strip().splitlines()[-1])
    assert held - released > 300  # of the 399 MiB freed, glibc had kept most until malloc_trim

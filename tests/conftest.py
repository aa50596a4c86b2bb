"""Test configuration: which models the heavy tests run on.

By default the heavy tests (forward/backward, features, ONNX...) run on the smallest variant
of every family; ``-m all_variants`` (or ``make test-all``) runs them on every variant.
Cheap tests (parameter counts, pretrained cfgs) always cover every registered model.
"""
from __future__ import annotations

import os

import pytest
import torch

import zoo
from zoo.registry import list_families
from zoo_testutils import ALL_MODELS, SMALLEST

# Tests measure behaviour, not speed: keep them deterministic and within 2 cores, shared
# among pytest-xdist's workers (`make test` runs two).
torch.manual_seed(0)
XDIST_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // XDIST_WORKERS))


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module of many small ops (``pytestmark = pytest.mark.usefixtures('one_thread')``).

    On a shared 2-core machine one thread is much faster than two, whose OpenMP workers wait
    on each other whenever the other core is busy.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_report_header(config: pytest.Config) -> str:
    return (f'zoo {zoo.__version__}: {len(ALL_MODELS)} models in {len(list_families())} families; '
            f'heavy tests on {sorted(SMALLEST)} unless -m all_variants')

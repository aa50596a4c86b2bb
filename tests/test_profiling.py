"""Tests of zoo.profiling and tools/benchmark.py: hand-computed MACs, meta-device parameter
counts, kernel detection, timing and peak-memory plumbing, and a CLI run."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from zoo.profiling import (Stat, count_flops, count_params, kernels_used, machine_info, matmul_peak_gflops,
                           measure_speed, peak_memory)

ROOT = Path(__file__).resolve().parents[1]
FLASH_CPU = 'aten::_scaled_dot_product_flash_attention_for_cpu'


def test_linear_macs() -> None:
    batch, fan_in, fan_out = 8, 64, 32
    flops = count_flops(nn.Linear(fan_in, fan_out), (batch, fan_in))
    assert flops.macs == batch * fan_in * fan_out
    assert flops.by_op == {'addmm': batch * fan_in * fan_out}
    assert flops.gflops == pytest.approx(2 * flops.gmacs)


def test_linear_on_tokens_macs() -> None:
    # (B, N, C) input: every token is a row of the product.
    flops = count_flops(nn.Linear(24, 48, bias=False), (2, 10, 24))
    assert flops.macs == 2 * 10 * 24 * 48


def test_conv2d_macs() -> None:
    conv = nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1)
    # Output 16x16; each output element takes Cin * k * k MACs.
    assert count_flops(conv, (2, 3, 32, 32)).macs == 2 * 16 * 16 * 16 * 3 * 3 * 3


def test_depthwise_conv_macs() -> None:
    conv = nn.Conv2d(16, 16, kernel_size=3, padding=1, groups=16)
    # One input channel per output channel.
    assert count_flops(conv, (1, 16, 20, 20)).macs == 16 * 20 * 20 * 3 * 3


def test_sdpa_macs() -> None:
    b, h, n, d = 2, 3, 50, 16

    class SelfAttention(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(x, x, x)

    # Q K^T and attn V: B*h*N*N*d MACs each (counted although the fused CPU kernel is the default).
    assert count_flops(SelfAttention(), (b, h, n, d)).macs == 2 * b * h * n * n * d


def test_cross_attention_macs() -> None:
    b, h, n, m, d, dv = 2, 3, 10, 14, 8, 6

    class CrossAttention(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            kv = q.new_ones(b, h, m, d)
            return F.scaled_dot_product_attention(q, kv, q.new_ones(b, h, m, dv))

    assert count_flops(CrossAttention(), (b, h, n, d)).macs == b * h * n * m * (d + dv)


def test_zoo_attention_macs() -> None:
    attention = pytest.importorskip('zoo.attention')
    b, h, n, d = 1, 2, 49, 8

    class ZooAttention(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return attention.dense_attention(x, x, x)

    # Counted even when the default backend runs a fused kernel.
    assert count_flops(ZooAttention(), (b, h, n, d)).macs == 2 * b * h * n * n * d


def test_flops_of_timm_model_match_on_meta() -> None:
    model = timm.create_model('test_vit')
    with torch.device('meta'):
        meta_model = timm.create_model('test_vit')
    shape = (1, *model.pretrained_cfg['input_size'])
    counted = count_flops(model, shape)
    assert count_flops(meta_model, shape).macs == counted.macs
    assert counted.by_op['bmm'] > 0  # attention is counted
    assert sum(counted.by_module.values()) == counted.macs


def test_flops_of_zoo_model_match_on_meta() -> None:
    # Zoo models validate their input (finite values): a meta tensor has none to check.
    import zoo  # noqa: F401
    model = timm.create_model('van_b0')
    with torch.device('meta'):
        meta_model = timm.create_model('van_b0')
    shape = (1, 3, 64, 96)
    assert count_flops(meta_model, shape).macs == count_flops(model, shape).macs > 0


def test_params_on_meta_equal_cpu() -> None:
    expected = sum(p.numel() for p in timm.create_model('resnet18').parameters())
    assert count_params('resnet18') == expected == 11_689_512
    assert count_params('resnet18', device='cpu') == expected
    assert count_params('resnet18', num_classes=10) == expected - 1000 * 513 + 10 * 513


def test_kernels_used_sees_fused_sdpa() -> None:
    model = timm.create_model('test_vit').eval()
    x = torch.randn(1, *model.pretrained_cfg['input_size'])
    assert FLASH_CPU in kernels_used(model, x)
    with sdpa_kernel(SDPBackend.MATH):
        math_kernels = kernels_used(model, x)
    assert FLASH_CPU not in math_kernels
    assert 'aten::bmm' in math_kernels


def test_kernels_used_leaves_out_first_use_work() -> None:
    class BuildsATableOnFirstUse(nn.Module):
        table: torch.Tensor | None = None

        def forward(self, x):
            if self.table is None:
                self.table = torch.arange(4) - torch.arange(4)[:, None]  # aten::sub, once
            return x * 2

    model = BuildsATableOnFirstUse()
    used = kernels_used(model, torch.ones(3))
    assert 'aten::mul' in used and 'aten::sub' not in used
    assert kernels_used(model, torch.ones(3)) == used


def test_measure_speed() -> None:
    threads = torch.get_num_threads()
    result = measure_speed(nn.Linear(32, 32), torch.randn(4, 32), warmup=1, repeats=5, threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert result.batch_size == 4 and result.threads == 1 and not result.compiled
    assert result.img_per_s.n == result.latency_ms.n == 5
    stat = result.latency_ms
    assert 0 < stat.min <= stat.q25 <= stat.median <= stat.q75 <= stat.max
    assert result.img_per_s.median == pytest.approx(4e3 / stat.median)


def test_stat() -> None:
    stat = Stat.of([4, 1, 3, 2, 5])
    assert (stat.median, stat.q25, stat.q75, stat.min, stat.max, stat.n) == (3, 2, 4, 1, 5, 5)
    assert Stat.of([7.0]).q75 == 7.0


def test_peak_memory_of_known_allocation() -> None:
    # The forward's only sizeable allocation is the output: 3 x 2048 x 2048 float32 = 48 MiB.
    result = peak_memory('torch.nn:Upsample', (1, 3, 512, 512), create_kwargs={'scale_factor': 4}, warmup=1, repeats=2)
    assert result.method == 'VmHWM-reset'
    assert result.peak_mb.median == pytest.approx(48.0, abs=1.5)
    assert result.baseline_mb > 50


def test_matmul_peak_and_machine_info() -> None:
    assert matmul_peak_gflops(size=256, repeats=3).median > 0
    info = machine_info()
    assert {'cpu_model', 'torch_threads', 'torch', 'timm', 'onnxruntime', 'cpu_bf16_instructions'} <= set(info)


def test_cpu_bf16_instructions_read_from_cpuinfo() -> None:
    from zoo.profiling import _cpu_bf16_flags
    x86 = 'processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512f avx512_vnni\n'
    assert _cpu_bf16_flags(x86) == []
    assert _cpu_bf16_flags(x86.replace('avx512_vnni', 'avx512_vnni avx512_bf16 amx_tile amx_bf16')) == [
        'avx512_bf16', 'amx_bf16']
    assert _cpu_bf16_flags('processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n') == ['bf16']
    assert _cpu_bf16_flags('processor\t: 0\n') is None  # no flag line: unknown, not "none"
    assert _cpu_bf16_flags(None) is None  # /proc/cpuinfo unreadable


def _load_benchmark():
    spec = importlib.util.spec_from_file_location('zoo_benchmark_cli', ROOT / 'tools' / 'benchmark.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_merge() -> None:
    merge = _load_benchmark().merge
    doc = {'a': {'speed': {'sdpa': {'eager': 1}}, 'params_m': 1.0}}
    merge(doc, {'a': {'speed': {'reference': {'eager': 2}}, 'params_m': 2.0}})
    assert doc == {'a': {'speed': {'sdpa': {'eager': 1}, 'reference': {'eager': 2}}, 'params_m': 2.0}}


def test_resolve_backends() -> None:
    resolve = _load_benchmark().resolve_backends
    import zoo.attention
    available = zoo.attention.available_backends()
    assert resolve(None) == [None, *available]  # the model as built, then every backend
    assert resolve(['default']) == [None]
    assert resolve(['default', 'reference']) == [None, 'reference']
    assert resolve(['no-such-backend']) == [None]


# the whole benchmark command in a subprocess: in the slow suite, which CI runs
@pytest.mark.slow
def test_benchmark_cli(tmp_path: Path) -> None:
    out = tmp_path / 'bench.json'
    # An earlier run's results for another model must survive the merge.
    out.write_text(json.dumps({'models': {'other_model': {'params_m': 1.0}}}))
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark.py'), 'resnet18', '--quick',
                           '--dense-sizes', '128', '--json', str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'resnet18' in proc.stdout and 'img/s' in proc.stdout
    doc = json.loads(out.read_text())
    assert doc['schema'] == 'zoo-benchmark/1'
    assert doc['machine']['cpu_model'] and doc['matmul_peak_gflops']['median'] > 0
    assert doc['models']['other_model'] == {'params_m': 1.0}
    res = doc['models']['resnet18']
    assert res['errors'] == {}
    assert res['params_m'] == pytest.approx(11.689512)
    assert res['gmacs'] == pytest.approx(1.814, abs=1e-3)
    assert res['img_size'] == [224, 224]
    assert res['efficiency_peak_gflops'] == doc['matmul_peak_gflops']['median']
    assert all(len(res['load_avg'][k]) == 3 for k in ('start', 'end'))  # Linux has getloadavg
    entry = res['speed']['default']['eager']
    assert entry['throughput']['batch_size'] == 2 and entry['latency']['batch_size'] == 1
    for stat in (entry['throughput']['img_per_s'], entry['latency']['latency_ms'], entry['efficiency']):
        assert stat['q25'] <= stat['median'] <= stat['q75']
    assert res['dense_memory']['default']['128']['peak_mb']['median'] > 0


def test_attention_backend_refuses_to_measure_a_fallback():
    # linear_attention has no SDPA path: under a global preference it runs on its default,
    # which a benchmark row labelled 'sdpa' must not time.
    from zoo.attention import BackendNotSupported, linear_attention
    from zoo.profiling import attention_backend
    q = k = v = torch.rand(1, 2, 16, 8)
    with attention_backend('reference'):
        linear_attention(q, k, v)
    with pytest.raises(BackendNotSupported, match="'sdpa' backend does not run linear_attention"):
        with attention_backend('sdpa'), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the fallback warning is said once per process
            linear_attention(q, k, v)


def test_conv_backward_layouts_tool(capsys) -> None:
    spec = importlib.util.spec_from_file_location('zoo_conv_layouts', ROOT / 'tools' / 'conv_backward_layouts.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(['--input', '1', '4', '16', '16', '--out-channels', '4', '--kernel', '3', '--stride', '1',
                      '--padding', '1', '--groups', '2', '--repeats', '1']) == 0
    out = capsys.readouterr().out
    assert 'groups 2' in out and 'contiguous' in out and 'channels_last' in out
    with pytest.raises(SystemExit):
        tool.main(['--input', '1', '3', '16', '16', '--groups', '2'])
    assert '--groups 2 must divide the input channels (3)' in capsys.readouterr().err

"""tools/model_cards.py: the generated table shows the benchmark file's numbers and stays in sync."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))
import model_cards  # noqa: E402


def _stat(median: float, q25: float, q75: float) -> dict:
    return dict(median=median, q25=q25, q75=q75, min=q25, max=q75, n=5)


def _train() -> dict:
    def step(img_per_s: float, peak_mb: float) -> dict:
        return {'eager': {'img_per_s': _stat(img_per_s, img_per_s, img_per_s)},
                'memory': {'peak_mb': _stat(peak_mb, peak_mb, peak_mb)}}
    return {'classifier@224x224/b32': {'float32': {'plain': step(5.5, 2600.0), 'grad_ckpt': step(4.0, 900.0)},
                                       'bfloat16': {'plain': step(3.0, 2000.0)}},
            'dense@512x512/b2': {'float32': {'plain': step(1.25, 700.0)}},
            'dense@1024x1024/b1': {'float32': {'plain': step(0.25, 1400.0)}}}


def _bench() -> dict:
    return {
        'machine': dict(cpu_model='Test CPU', cpu_capability='AVX2', usable_cpus=2, torch_threads=2,
                        torch='2.x', timm='1.x'),
        'matmul_peak_gflops': _stat(400.0, 390.0, 410.0),
        'models': {'van_b0': {
            'gmacs': 0.864, 'img_size': [224, 224],
            'load_avg': {'start': [1.5, 1.2, 1.0], 'end': [1.4, 1.2, 1.0]},
            'backends': {'default': {'attention_kernels': []}, 'reference': {'same_kernels_as': 'default'}},
            'speed': {'default': {'eager': {
                'throughput': {'batch_size': 32, 'img_per_s': _stat(41.25, 40.0, 42.5)},
                'latency': {'batch_size': 1, 'latency_ms': _stat(23.4, 22.0, 25.0)},
                'efficiency': _stat(0.178, 0.17, 0.18)},
                'compile': {
                'throughput': {'batch_size': 32, 'img_per_s': _stat(50.0, 49.0, 51.0), 'compile_s': 33.3},
                'latency': {'batch_size': 1, 'latency_ms': _stat(20.0, 19.0, 21.0)},
                'efficiency': _stat(0.216, 0.21, 0.22)}}},
            'onnx': {'latency': {'batch_size': 1, 'latency_ms': _stat(12.3, 12.0, 13.0)}},
            'dense_memory': {'default': {'512': {'peak_mb': _stat(40.0, 40.0, 40.0)},
                                         '1024': {'peak_mb': _stat(171.9, 171.0, 172.0)}}},
            'train': _train(),
        }, 'van_b0[retain-memory]': {
            'load_avg': {'start': [0.5, 1.0, 1.0], 'end': [0.6, 1.0, 1.0]},
            'speed': {'default': {'eager': {
                'throughput': {'batch_size': 32, 'img_per_s': _stat(80.0, 79.0, 81.0)},
                'latency': {'batch_size': 1, 'latency_ms': _stat(22.0, 21.0, 23.0)},
                'efficiency': _stat(0.3456, 0.34, 0.35)}}},
        }},
    }


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    bench = tmp_path / 'bench.json'
    bench.write_text(json.dumps(_bench()))
    published = tmp_path / 'published.json'
    published.write_text(json.dumps({'van_b0': {'top1': 75.4}, 'van_b1': {'top1': None, 'note': 'n/a'}}))
    return bench, published


def test_machine_line_says_when_the_run_was_pinned(tmp_path):
    bench, published = _write_inputs(tmp_path)
    doc = json.loads(bench.read_text())
    doc['machine'].update(logical_cpus=2, usable_cpus=1, torch_threads=1)  # taskset -c 0
    bench.write_text(json.dumps(doc))
    out = tmp_path / 'cards'
    args = ['--bench', str(bench), '--published', str(published), '--out', str(out), '--models', 'van_b0']
    assert model_cards.main(args) == 0
    assert 'Test CPU (AVX2), 2 CPUs, the latest run pinned to 1, 1 torch thread(s)' in (out / 'README.md').read_text()


def test_table_shows_the_benchmark_numbers(tmp_path):
    bench, published = _write_inputs(tmp_path)
    out = tmp_path / 'cards'
    args = ['--bench', str(bench), '--published', str(published), '--out', str(out), '--models', 'van_b0', 'van_b1']
    assert model_cards.main(args) == 0
    text = (out / 'README.md').read_text()
    row = next(line for line in text.splitlines() if line.startswith('| `van_b0`'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    # params from the registry (exact), the rest from the file above
    assert cells == ['`van_b0`', 'van', '4.11', '0.864', '75.4', '41.2 (40.0–42.5)', '23.4', '17.8%',
                     '80.0', '34.6%', '12.3', '172']
    assert "started: 0.50–1.50" in text  # both runs' load averages
    backends = [line for line in text.split('## Attention backends')[1].splitlines() if line.startswith('| `van_b0`')]
    assert backends[0].startswith('| `van_b0` | default | eager | 41.2 | 23.4 | 17.8 | — |')
    assert backends[1].startswith('| `van_b0` | default | compile | 50.0 | 20.0 | 21.6 | 33 |')
    assert 'same kernels as default' in backends[2]
    row_b1 = next(line for line in text.splitlines() if line.startswith('| `van_b1`'))
    assert '13.86' in row_b1 and '— (n/a)' in row_b1
    assert 'Not benchmarked yet (1): `van_b1`' in text
    assert 'fp32 matmul peak 400 GFLOP/s' in text and 'batch 32' in text
    assert 'Test CPU (AVX2), 2 usable CPUs, 2 torch thread(s)' in text
    for png in model_cards.PLOTS:  # all four have data here
        data = (out / 'plots' / png).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000


def test_training_plot_takes_the_float32_steps_without_checkpointing():
    points = model_cards._train_fp32_points({'train': _train()})
    assert points == {'classifier': (2600.0, 5.5), 'dense@512x512': (700.0, 1.25)}
    assert model_cards._train_fp32_points({'train': {'dense@512x512/b2': {'bfloat16': {}}}}) == {}


def test_check_detects_a_stale_readme(tmp_path):
    bench, published = _write_inputs(tmp_path)
    out = tmp_path / 'cards'
    args = ['--bench', str(bench), '--published', str(published), '--out', str(out), '--models', 'van_b0']
    assert model_cards.main(args + ['--no-plots']) == 0
    assert model_cards.main(args + ['--check']) == 0
    readme = out / 'README.md'
    readme.write_text(readme.read_text().replace('41.2', '99.9'))  # a hand edit
    assert model_cards.main(args + ['--check']) == 1


def test_unknown_model_is_refused(tmp_path):
    bench, published = _write_inputs(tmp_path)
    with pytest.raises(SystemExit, match='not zoo models'):
        model_cards.main(['--bench', str(bench), '--published', str(published), '--out', str(tmp_path),
                          '--models', 'resnet18'])


def test_committed_readme_is_generated_from_the_committed_files():
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'model_cards.py'), '--check'],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


FAMILIES_WITH_OFFICIAL_DENSE_CODE = ('biformer', 'crossformer', 'davit', 'litv2', 'ravlt', 'shvit', 'van')


@pytest.mark.parametrize('family', FAMILIES_WITH_OFFICIAL_DENSE_CODE)
def test_released_dense_weights_table_names_existing_configs(family):
    card = (REPO / 'model_cards' / f'{family}.md').read_text()
    assert '## Released dense weights' in card
    section = card.split('## Released dense weights', 1)[1].split('\n## ', 1)[0]
    rows = [line for line in section.splitlines() if line.startswith('|') and not line.startswith('|---')][1:]
    assert rows, f'{family}: the released dense weights table has no rows'
    configs = re.findall(r'`(configs/[^`]+\.py)`', section)
    assert configs, f'{family}: no config named in the released dense weights section'
    missing = [c for c in configs if not (REPO / c).is_file()]
    assert not missing, f'{family} card names configs that do not exist: {missing}'

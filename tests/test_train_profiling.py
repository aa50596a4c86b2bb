"""zoo.train_profiling and ``tools/benchmark.py --train``: the measured step is a real training
step (its gradients equal a hand-written one), memory figures respond to grad checkpointing,
and the benchmark writes the documented JSON."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from zoo.profiling import compile_cache
from zoo.train_profiling import dense_loss, make_train_step, measure_train_step, set_grad_checkpointing, \
    train_peak_memory

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures('one_thread')


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_dense_loss_is_the_sum_of_mean_squares():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])
    assert dense_loss([a, b]).item() == pytest.approx((1 + 4) / 2 + 9)


@pytest.mark.parametrize('kind', ['classifier', 'dense'])
def test_step_gradients_equal_a_hand_written_step(kind):
    torch.manual_seed(0)
    model = timm.create_model('van_b0', pretrained=False, num_classes=10, features_only=kind == 'dense').train()
    images = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([3, 7])
    # Stale gradients from an earlier step must not leak into the measured one.
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    loss = make_train_step(model, kind)(images, labels)
    ours = _grads(model)

    model.zero_grad(set_to_none=True)
    out = model(images)
    expected = F.cross_entropy(out, labels) if kind == 'classifier' else sum((f ** 2).mean() for f in out)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ours.keys() == _grads(model).keys() and len(ours) == len(list(model.parameters()))
    for name, grad in _grads(model).items():
        torch.testing.assert_close(ours[name], grad, msg=name)


def test_bf16_step_runs_under_autocast():
    model = timm.create_model('van_b0', pretrained=False, num_classes=10).train()
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = make_train_step(model, 'classifier', precision='bfloat16')(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
    assert seen == [torch.bfloat16] and torch.isfinite(loss)


def test_bad_arguments_are_named():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="kind must be one of 'classifier', 'dense'"):
        make_train_step(model, 'detector')
    with pytest.raises(ValueError, match="precision must be one of"):
        make_train_step(model, 'dense', precision='half')
    with pytest.raises(TypeError, match='no set_grad_checkpointing'):
        set_grad_checkpointing(model)


def test_measure_train_step_with_grad_checkpointing_on_features_only():
    model = timm.create_model('van_b0', pretrained=False, features_only=True)
    result = measure_train_step(model, torch.randn(1, 3, 64, 64), kind='dense', grad_checkpointing=True,
                                warmup=0, repeats=2, threads=1)
    assert result.batch_size == 1 and result.img_per_s.n == 2 and result.img_per_s.median > 0
    assert model.training and not model.model.stages[0].grad_checkpointing  # switched back off


def test_compile_cache_is_empty_and_temporary(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path))
    with compile_cache(True):
        inside = os.environ['TORCHINDUCTOR_CACHE_DIR']
        assert inside != str(tmp_path) and os.listdir(inside) == []
    assert not os.path.exists(inside) and os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(tmp_path)
    with compile_cache(False):
        assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(tmp_path)


@pytest.mark.slow
def test_compiled_step_leaves_the_users_inductor_cache_alone(monkeypatch, tmp_path):
    # Each compiled measurement gets its own empty cache, so nothing lands in the cache the user
    # configured (which a warm re-run would otherwise read).
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU())
    result = measure_train_step(model, torch.randn(2, 3, 16, 16), kind='dense', compile=True, warmup=0,
                                repeats=1)
    assert result.compiled and result.compile_s > 0
    assert list(tmp_path.iterdir()) == []


# measuring children in fresh processes: in the slow suite, which CI runs
@pytest.mark.slow
def test_grad_checkpointing_lowers_the_measured_peak():
    # VAN-B0 dense at 128: the activations kept for the backward dominate the step's memory.
    plain = train_peak_memory('van_b0', (1, 3, 128, 128), kind='dense', threads=1, repeats=1, timeout=300)
    ckpt = train_peak_memory('van_b0', (1, 3, 128, 128), kind='dense', grad_checkpointing=True, threads=1,
                             repeats=1, timeout=300)
    assert plain.method == 'VmHWM-reset' and plain.baseline_mb > 0
    assert ckpt.peak_mb.median < 0.8 * plain.peak_mb.median, (plain.peak_mb, ckpt.peak_mb)


def _load_benchmark():
    spec = importlib.util.spec_from_file_location('zoo_benchmark_tool', ROOT / 'tools' / 'benchmark.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_train_writes_the_documented_json(tmp_path):
    out = tmp_path / 'bench.json'
    code = _load_benchmark().main(['van_b0', '--train', '--quick', '--threads', '1', '--img-size', '64',
                                   '--train-dense', '96:1', '--precision', 'float32', '--grad-ckpt', 'plain',
                                   '--no-train-memory', '--json', str(out)])
    assert code == 0
    train = json.loads(out.read_text())['models']['van_b0']['train']
    assert set(train) == {'classifier@64x64/b2', 'dense@96x96/b1'}
    entry = train['dense@96x96/b1']['float32']['plain']['eager']
    assert entry['batch_size'] == 1 and entry['img_per_s']['n'] == 3


def test_code_version_names_the_checkout_and_its_state(tmp_path):
    bench = _load_benchmark()
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                          cwd=Path(bench.__file__).resolve().parents[1]).stdout.strip()
    version = bench.code_version()
    assert version is not None and version.split('+')[0] == head
    # In a repository of its own: the figures under model_cards/ (which runs merge into) do not
    # make the code dirty, a changed code file does, an untracked file does not.
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-C', str(tmp_path)]
    (tmp_path / 'model_cards').mkdir()
    (tmp_path / 'model_cards' / 'benchmarks.json').write_text('{}')
    (tmp_path / 'model.py').write_text('x = 1\n')
    for cmd in (['init', '-q'], ['add', '.'], ['commit', '-q', '-m', 'init']):
        subprocess.run(git + cmd, check=True, capture_output=True)
    commit = subprocess.run(git + ['rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    (tmp_path / 'model_cards' / 'benchmarks.json').write_text('{"models": {}}')
    (tmp_path / 'notes.txt').write_text('untracked')
    assert bench.code_version(tmp_path) == commit
    (tmp_path / 'model.py').write_text('x = 2\n')
    assert bench.code_version(tmp_path) == commit + '+dirty'


def test_benchmark_train_keeps_the_inference_machine_and_records_its_own(tmp_path):
    out = tmp_path / 'bench.json'
    inference_machine = {'cpu_model': 'Inference CPU', 'torch': '0.0'}
    out.write_text(json.dumps({'machine': inference_machine, 'matmul_peak_gflops': {'median': 1.0},
                               'models': {'van_b0': {'speed': {'default': {}}}}}))
    code = _load_benchmark().main(['van_b0', '--train', '--quick', '--threads', '1', '--img-size', '64',
                                   '--train-dense', '96:1', '--precision', 'float32', '--grad-ckpt', 'plain',
                                   '--no-train-memory', '--json', str(out)])
    doc = json.loads(out.read_text())
    assert code == 0 and doc['machine'] == inference_machine and doc['matmul_peak_gflops'] == {'median': 1.0}
    entry = doc['models']['van_b0']
    assert entry['speed'] == {'default': {}} and 'train' in entry
    assert entry['train_machine']['torch'] == torch.__version__ and entry['train_machine']['torch_threads'] == 1
    first = doc['runs'][-1]
    assert first['machine'] == {'cpu_model': entry['train_machine']['cpu_model'], 'torch': torch.__version__,
                                'cpu_bf16_instructions': entry['train_machine']['cpu_bf16_instructions']}
    # A second run of the dense step only: that entry is replaced whole and names the second run,
    # the classifier's keeps the first run's provenance.
    classifier = entry['train']['classifier@64x64/b2']['float32']['plain']
    assert classifier['measured']['run'] == first['started']
    assert classifier['measured']['commit'] == entry['train_commit']
    assert len(classifier['measured']['load_avg']) == 2
    doc['models']['van_b0']['train']['dense@96x96/b1']['float32']['plain']['stale'] = True
    doc['runs'][-1]['started'] = '2000-01-01T00:00:00+0000'  # two runs within one second must differ
    classifier['measured']['run'] = '2000-01-01T00:00:00+0000'
    out.write_text(json.dumps(doc))
    code = _load_benchmark().main(['van_b0', '--train', '--quick', '--threads', '1', '--train-dense-only',
                                   '--train-dense', '96:1', '--precision', 'float32', '--grad-ckpt', 'plain',
                                   '--no-train-memory', '--json', str(out)])
    doc = json.loads(out.read_text())
    train = doc['models']['van_b0']['train']
    assert code == 0 and set(train) == {'classifier@64x64/b2', 'dense@96x96/b1'}
    assert train['classifier@64x64/b2']['float32']['plain']['measured']['run'] == '2000-01-01T00:00:00+0000'
    dense = train['dense@96x96/b1']['float32']['plain']
    assert dense['measured']['run'] == doc['runs'][-1]['started'] != '2000-01-01T00:00:00+0000'
    assert 'stale' not in dense and dense['eager']['batch_size'] == 1


def test_benchmark_train_keeps_the_entries_a_cut_short_run_finished(tmp_path):
    # An interrupt during the second entry (the dense step) must leave the first on disk, with its
    # provenance and the machine, and nothing of the unfinished one.
    bench = _load_benchmark()
    measure = bench.measure_train_step

    def interrupted_on_dense(model, images, *, kind, **kwargs):
        if kind == 'dense':
            raise KeyboardInterrupt
        return measure(model, images, kind=kind, **kwargs)

    bench.measure_train_step = interrupted_on_dense
    out = tmp_path / 'bench.json'
    with pytest.raises(KeyboardInterrupt):
        bench.main(['van_b0', '--train', '--quick', '--threads', '1', '--img-size', '64', '--train-dense', '96:1',
                    '--precision', 'float32', '--grad-ckpt', 'plain', '--no-train-memory', '--json', str(out)])
    doc = json.loads(out.read_text())
    entry = doc['models']['van_b0']
    assert set(entry['train']) == {'classifier@64x64/b2'}
    classifier = entry['train']['classifier@64x64/b2']['float32']['plain']
    assert classifier['eager']['batch_size'] == 2 and classifier['eager']['img_per_s']['n'] == 3
    assert classifier['measured']['run'] == doc['runs'][-1]['started']
    assert entry['train_machine']['cpu_model'] == doc['runs'][-1]['machine']['cpu_model']
    assert 'end' not in entry['train_load_avg']  # the model's run did not finish


def test_benchmark_rejects_a_bad_dense_spec(capsys):
    with pytest.raises(SystemExit):
        _load_benchmark().parse_args(['van_b0', '--train', '--train-dense', '512x2'])
    assert 'SIZE:BATCH' in capsys.readouterr().err

"""tools/model_cards.py's generated card sections (mixed precision, side by side, training cost)
and tools/mixed_precision.py's measurements."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))
import mixed_precision  # noqa: E402
import model_cards  # noqa: E402

from zoo_testutils import parity_fixture  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')


def _stat(median: float, q25: float, q75: float) -> dict:
    return dict(median=median, q25=q25, q75=q75, min=q25, max=q75, n=3)


def _mixed() -> dict:
    def dtype(autocast: float, official: float | None, bound: float, finite: bool = True) -> dict:
        return dict(autocast_err=autocast, cast_err=autocast / 2, official_autocast_err=official,
                    official_cast_err=official, autocast_bound=bound, cast_bound=bound, features_512_finite=finite)
    return {'settings': {'command': 'python tools/mixed_precision.py --json X', 'torch': '2.x', 'threads': 1},
            'models': {'van_b0': {'load_avg': {'start': [1.25, 1.0, 1.0], 'end': [1.5, 1.0, 1.0]},
                                  'bfloat16': dtype(4.5e-3, 5e-3, 7.5e-3),
                                  'float16': dtype(2.0e-3, 1e-3, 1.5e-3, finite=False)}}}


def _side() -> dict:
    def step(size: int, thr: float, mem: float) -> dict:
        return {'batch_size': 2, 'input_size': size, 'throughput_ratio': thr, 'memory_ratio': mem,
                'speed': {'ours': {'img_per_s': 3.0 * thr}, 'official': {'img_per_s': 3.0}},
                'memory': {'ours': {'peak_mb': 500.0 * mem}, 'official': {'peak_mb': 500.0}}}
    return {'settings': {'threads': 1, 'repeats': 3, 'warmup': 1, 'classifier': {'batch_size': 4, 'input_size': 224},
                         'dense': {'batch_size': 2, 'input_size': 512}},
            'notes': ['applies to all', 'LITv2: only for litv2'],
            'runs': [{'families': ['van', 'litv2']}],
            'families': {
                'van': {'ours': 'van_b0', 'official_repo': 'https://example.org/VAN', 'official_commit': 'e19779b53a1b',
                        'load_speed': {'start': [2.0, 1.5, 1.0], 'end': [2.5, 1.5, 1.0]},
                        'classifier': step(224, 1.25, 0.75), 'dense': step(512, 0.8, 1.0001)},
                'litv2': {'ours': 'litv2_small', 'classifier': step(224, 1.5, 0.5)}}}


def _bench_with_train() -> dict:
    entry = {'eager': {'batch_size': 32, 'img_per_s': _stat(4.9, 4.78, 4.93), 'latency_ms': _stat(6531.0, 6500, 6600)},
             'memory': {'peak_mb': _stat(2617.0, 2617.0, 2617.0)}}
    compiled = dict(entry, compile={'img_per_s': _stat(7.25, 7.0, 7.5), 'compile_s': 42.0})
    return {'machine': {'cpu_model': 'Test CPU', 'torch': '2.x'},
            'runs': [{'argv': ['van_b1', 'van_b0', '--train', '--threads', '1'], 'models': ['van_b1', 'van_b0']}],
            'models': {'van_b0': {'speed': {}, 'load_avg': {'start': [9.0, 9.0, 9.0]},
                                  'train_load_avg': {'start': [1.5, 1.0, 1.0], 'end': [1.75, 1.0, 1.0]},
                                  'train_updated': '2026-12-05T12:57:46+0000', 'train_commit': '567467a',
                                  'train_machine': {'cpu_model': 'Train CPU', 'torch': '2.y'},
                                  'train': {'dense@512x512/b2': {'float32': {'plain': compiled}},
                                            'classifier@224x224/b32': {'bfloat16': {'grad_ckpt': entry},
                                                                       'float32': {'plain': entry}}}},
                       'van_b1': {'gmacs': 1.0}}}


def _row(lines: list[str], start: str) -> list[str]:
    return [c.strip() for c in next(line for line in lines if line.startswith(start)).strip('|').split('|')]


def test_mixed_precision_section_shows_ours_official_and_bold_over_bound():
    lines = model_cards.render_family_mixed(_mixed(), ['van_b0', 'van_b1'])
    assert lines[0] == model_cards.MIXED_BEGIN and lines[-1] == model_cards.MIXED_END
    # bf16 within its bound; fp16 autocast 2e-3 > 1.5e-3 is bold, its cast (1e-3) is not; fp16 features not finite
    assert _row(lines, '| `van_b0`') == ['`van_b0`', '4.5e-03 / 5.0e-03', '**2.0e-03 / 1.0e-03**',
                                        '2.2e-03 / 5.0e-03', '1.0e-03 / 1.0e-03', 'yes / **no**']
    text = '\n'.join(lines)
    assert 'Not measured yet: `van_b1`.' in text
    assert '`python tools/mixed_precision.py [MODEL ...] --json model_cards/mixed_precision.json`' in text and 'load average (1 min) 1.25–1.50' in text
    readme = '\n'.join(model_cards.render_mixed(_mixed(), ['van_b0', 'van_b1']))
    assert '| `van_b0` | 4.5e-03 / 5.0e-03 |' in readme and 'Not measured yet (1): `van_b1`.' in readme
    assert model_cards.render_mixed({}, ['van_b0']) == []


def test_side_by_side_section_shows_ratios_and_bolds_misses():
    lines = model_cards.render_family_side_by_side(_side(), 'van')
    assert lines[0] == model_cards.SIDE_BEGIN and lines[-1] == model_cards.SIDE_END
    assert _row(lines, '| classifier') == ['classifier 224x224, batch 2', '3.75', '3.00', '1.25x', '375', '500',
                                           '0.75x']
    # throughput below 1 and memory above 1 miss the goal; 1.0001 keeps a third digit
    assert _row(lines, '| dense') == ['dense 512x512, batch 2', '2.40', '3.00', '**0.80x**', '500', '500',
                                      '**1.000x**']
    text = '\n'.join(lines)
    assert '- applies to all' in text and 'LITv2' not in text  # a note addressed to another family
    assert 'e19779b' in text and 'e19779b53a1b' not in text
    assert '--families van litv2 --batch-size 4 --dense-size 512 --dense-batch 2 --threads 1' in text
    assert '2.00 / 1.50 / 1.00 at the start' in text
    assert '- LITv2: only for litv2' in '\n'.join(model_cards.render_family_side_by_side(_side(), 'litv2'))
    absent = model_cards.render_family_side_by_side(_side(), 'halonet')
    assert len(absent) == 5 and 'no official training code' in absent[3]
    readme = model_cards.render_side_by_side(_side(), ['halonet', 'litv2', 'van'])
    assert '| [van](van.md) | `van_b0` | 1.25x | 0.75x | **0.80x** | **1.000x** |' in readme
    assert '| [litv2](litv2.md) | `litv2_small` | 1.50x | 0.50x | — | — |' in readme
    assert 'No official training code to compare with: halonet.' in readme


def test_training_section_shows_the_train_entries():
    lines = model_cards.render_family_training(_bench_with_train(), ['van_b0', 'van_b1'])
    assert lines[0] == model_cards.TRAIN_BEGIN and lines[-1] == model_cards.TRAIN_END
    rows = [line for line in lines if line.startswith('| `van_b0`')]
    # classifier before dense, float32 before bfloat16; compile columns because one entry has them
    assert [c.strip() for c in rows[0].strip('|').split('|')] == [
        '`van_b0`', '`classifier@224x224/b32`', 'float32', 'plain', '4.90 [4.78–4.93]', '6531', '2617', '—', '—', '—', '1']
    assert rows[1].startswith('| `van_b0` | `classifier@224x224/b32` | bfloat16 | grad_ckpt |')
    assert rows[2].endswith('| 7.25 [7.00–7.50] | 1.48x | 42 | 1 |')  # 7.25 / 4.90
    text = '\n'.join(lines)
    assert '1. `van_b0`: `python tools/benchmark.py van_b0 --train --threads 1`' in text
    assert 'load average (1 min) 1.50–1.75; measured 2026-12-05 at commit `567467a`.' in text  # the training run's, not the inference run's
    assert 'Train CPU, torch 2.y' in text and 'Test CPU' not in text  # and its machine
    assert 'Not measured yet: `van_b1`.' in text
    readme = model_cards.render_training(_bench_with_train(), ['van_b0', 'van_b1'])
    # the fixture's machine does not record bfloat16 instructions: its bfloat16 speed is marked
    assert '| `van_b0` | `classifier@224x224/b32` | 4.90 / — | — / 4.90† | 2617 / — | — / 2617 | — |' in readme
    assert '| `van_b0` | `dense@512x512/b2` | 4.90 / — | — / — | 2617 / — | — / — | 1.48x (42 s) |' in readme  # 7.25 / 4.90


def test_training_section_names_the_run_of_each_entry():
    # Two runs measured van_b0 in parts: each row names its own run, each run its command, date,
    # commit and load, not the latest run's.
    bench = _bench_with_train()
    first = {'started': '2026-12-01T10:00:00+0000', 'argv': ['van_b0', '--train', '--precision', 'bfloat16'],
             'models': ['van_b0'], 'machine': {'cpu_model': 'Old CPU', 'torch': '2.a', 'cpu_bf16_instructions': []}}
    second = {'started': '2026-12-06T06:00:00+0000', 'argv': ['van_b0', '--train', '--compile'], 'models': ['van_b0']}
    bench['runs'] = [first, second]
    bench['models']['van_b0']['train_machine']['cpu_bf16_instructions'] = []  # read off the latest run's CPU
    train = bench['models']['van_b0']['train']
    train['classifier@224x224/b32']['bfloat16']['grad_ckpt'] = dict(
        train['classifier@224x224/b32']['bfloat16']['grad_ckpt'],
        measured={'run': first['started'], 'commit': 'aaaaaaa', 'load_avg': [1.0, 3.0]})
    train['dense@512x512/b2']['float32']['plain'] = dict(
        train['dense@512x512/b2']['float32']['plain'],
        measured={'run': second['started'], 'commit': 'bbbbbbb', 'load_avg': [2.0, 2.25]})
    lines = model_cards.render_family_training(bench, ['van_b0'])
    runs = {line.split('.')[0]: line for line in lines if line[:1].isdigit()}
    assert [_row(lines, f'| `van_b0` | `{s}` | {p} | {c} |')[-1] for s, p, c in (
        ('classifier@224x224/b32', 'float32', 'plain'), ('classifier@224x224/b32', 'bfloat16', 'grad_ckpt'),
        ('dense@512x512/b2', 'float32', 'plain'))] == ['1', '2', '3']
    # 1: the entry without provenance keeps the model-level fields (its latest run's)
    assert 'measured 2026-12-05 at commit `567467a`' in runs['1'] and 'Train CPU' in runs['1']
    assert runs['2'] == ('2. `van_b0`: `python tools/benchmark.py van_b0 --train --precision bfloat16`; Old CPU '
                         '(no bfloat16 instructions), torch 2.a; load average (1 min) 1.00–3.00; measured 2026-12-01 at commit `aaaaaaa`.')
    assert '`python tools/benchmark.py van_b0 --train --compile`; Train CPU, torch 2.y;' in runs['3']  # not its flags
    assert 'load average (1 min) 2.00–2.25; measured 2026-12-06 at commit `bbbbbbb`.' in runs['3']


def test_readme_marks_bfloat16_speeds_from_cpus_without_bfloat16_instructions():
    # One model, three runs: the bfloat16 speed of the run on a CPU with AMX stands as is; the one from
    # a CPU without bfloat16 instructions, and the one from a run that did not record them, carry
    # the mark; float32 speeds and memory never do.
    stat = {'eager': {'img_per_s': _stat(2.0, 2.0, 2.0)}, 'memory': {'peak_mb': _stat(100.0, 100.0, 100.0)}}
    runs = {'amx': ['avx512_bf16', 'amx_bf16'], 'none': [], 'unrecorded': None}
    bench = {'runs': [{'started': k, 'models': ['m'], 'argv': ['m', '--train'],
                       'machine': {'cpu_model': 'CPU', 'torch': '2', **({} if v is None else {'cpu_bf16_instructions': v})}}
                      for k, v in runs.items()],
             'models': {'m': {'train': {
                 'classifier@224x224/b32': {'float32': {'plain': dict(stat, measured={'run': 'none'})},
                                            'bfloat16': {'plain': dict(stat, measured={'run': 'amx'}),
                                                         'grad_ckpt': dict(stat, measured={'run': 'none'})}},
                 'dense@512x512/b2': {'bfloat16': {'plain': dict(stat, measured={'run': 'unrecorded'})}}}}}}
    readme = model_cards.render_training(bench, ['m'])
    assert '| `m` | `classifier@224x224/b32` | 2.00 / — | 2.00 / 2.00† | 100 / — | 100 / 100 | — |' in readme
    assert '| `m` | `dense@512x512/b2` | — / — | 2.00† / — | — / — | 100 / — | — |' in readme
    assert any(line.startswith('† measured on a CPU without bfloat16 instructions') for line in readme)
    bench['runs'][1]['machine']['cpu_bf16_instructions'] = ['amx_bf16']
    bench['runs'][2]['machine']['cpu_bf16_instructions'] = ['avx512_bf16']
    readme = model_cards.render_training(bench, ['m'])
    assert not any('†' in line for line in readme)  # no mark, no footnote


def test_speeds_from_a_minority_cpu_are_marked_and_the_card_says_its_runs_mix_cpus():
    # Two models, three runs: two runs on a Xeon measure three entries, a --compile run on an EPYC
    # re-measures one row's float32 plain step. The README marks that speed (not its memory, not the
    # row's Xeon speeds) and names both CPUs; the card of the mixed model says its runs span two
    # CPUs, the other card does not.
    stat = {'eager': {'img_per_s': _stat(2.0, 2.0, 2.0)}, 'memory': {'peak_mb': _stat(100.0, 100.0, 100.0)}}
    amx = ['amx_bf16']
    bench = {'runs': [{'started': 'x1', 'models': ['m'], 'argv': ['m', '--train'],
                       'machine': {'cpu_model': 'Xeon', 'torch': '2', 'cpu_bf16_instructions': amx}},
                      {'started': 'x2', 'models': ['n'], 'argv': ['n', '--train'],
                       'machine': {'cpu_model': 'Xeon', 'torch': '2', 'cpu_bf16_instructions': amx}},
                      {'started': 'e1', 'models': ['m'], 'argv': ['m', '--train', '--compile'],
                       'machine': {'cpu_model': 'EPYC', 'torch': '2', 'cpu_bf16_instructions': amx}}],
             'models': {'m': {'train': {'classifier@224x224/b32': {
                                 'float32': {'plain': dict(stat, measured={'run': 'e1'}),
                                             'grad_ckpt': dict(stat, measured={'run': 'x1'})},
                                 'bfloat16': {'plain': dict(stat, measured={'run': 'x1'})}}}},
                        'n': {'train': {'classifier@224x224/b32': {
                                 'float32': {'plain': dict(stat, measured={'run': 'x2'})}}}}}}
    readme = model_cards.render_training(bench, ['m', 'n'])
    assert '| `m` | `classifier@224x224/b32` | 2.00‡ / 2.00 | 2.00 / — | 100 / 100 | 100 / — | — |' in readme
    assert '| `n` | `classifier@224x224/b32` | 2.00 / — | — / — | 100 / — | — / — | — |' in readme
    assert any(line.startswith('‡ measured on EPYC, not on the Xeon that measured') for line in readme)
    mixed = model_cards.render_family_training(bench, ['m'])
    assert any(line.startswith('These runs ran on 2 CPU models (EPYC, Xeon)') for line in mixed)
    assert not any('CPU models' in line for line in model_cards.render_family_training(bench, ['n']))
    # One CPU throughout: no mark, no footnote.
    bench['runs'][2]['machine']['cpu_model'] = 'Xeon'
    assert not any('‡' in line for line in model_cards.render_training(bench, ['m', 'n']))
    assert not any('CPU models' in line for line in model_cards.render_family_training(bench, ['m']))


def test_training_section_without_train_entries():
    for bench in ({}, {'models': {'van_b0': {'gmacs': 1.0}}}):
        lines = model_cards.render_family_training(bench, ['van_b0'])
        assert 'Not measured yet' in lines[3] and lines[-1] == model_cards.TRAIN_END
        assert 'Not measured yet' in model_cards.render_training(bench, ['van_b0'])[-1]


def test_update_family_card_replaces_only_its_own_section():
    card = '# VAN\n\nhand-written\n'
    backends = [model_cards.BACKENDS_BEGIN, 'backends v1', model_cards.BACKENDS_END]
    mixed = [model_cards.MIXED_BEGIN, 'mixed v1', model_cards.MIXED_END]
    card = model_cards.update_family_card(card, backends)  # the default pair: the backend markers
    card = model_cards.update_family_card(card, mixed, mixed[0], mixed[-1])
    assert card.index('backends v1') < card.index('mixed v1') and card.startswith('# VAN\n\nhand-written\n\n')
    updated = model_cards.update_family_card(card, [mixed[0], 'mixed v2', mixed[-1]], mixed[0], mixed[-1])
    assert updated == card.replace('mixed v1', 'mixed v2')
    again = model_cards.update_family_card(updated, [backends[0], 'backends v2', backends[-1]])
    assert again == updated.replace('backends v1', 'backends v2')


def test_check_notices_a_stale_generated_card_section(tmp_path):
    inputs = {'bench': _bench_with_train(), 'mixed': _mixed(), 'side': _side()}
    for name, doc in inputs.items():
        (tmp_path / f'{name}.json').write_text(json.dumps(doc))
    published = tmp_path / 'published.json'
    published.write_text(json.dumps({'van_b0': {'top1': 75.4}}))
    out = tmp_path / 'cards'
    out.mkdir()
    (out / 'van.md').write_text('# VAN\n\nhand-written\n')
    args = ['--bench', str(tmp_path / 'bench.json'), '--mixed-precision', str(tmp_path / 'mixed.json'),
            '--side-by-side', str(tmp_path / 'side.json'), '--backends', str(tmp_path / 'absent.json'),
            '--published', str(published), '--out', str(out), '--models', 'van_b0', '--no-plots']
    assert model_cards.main(args) == 0
    card = (out / 'van.md').read_text()
    assert card.startswith('# VAN\n\nhand-written\n\n' + model_cards.MIXED_BEGIN)
    assert [card.count(m) for m in (model_cards.MIXED_END, model_cards.SIDE_END, model_cards.TRAIN_END)] == [1, 1, 1]
    assert model_cards.BACKENDS_BEGIN not in card  # no backends.json: no backend section
    readme = (out / 'README.md').read_text()
    assert '## Mixed precision' in readme and '## Training side by side' in readme and '## Training cost' in readme
    assert model_cards.main(args + ['--check']) == 0
    assert model_cards.main(args) == 0 and (out / 'van.md').read_text() == card  # idempotent
    for old, new in (('4.5e-03 / 5.0e-03', '9.9e-03 / 5.0e-03'), ('1.25x', '9.99x'), ('4.90 [4.78', '9.90 [4.78')):
        (out / 'van.md').write_text(card.replace(old, new, 1))
        assert model_cards.main(args + ['--check']) == 1, old
    (out / 'van.md').write_text(card)
    assert model_cards.main(args + ['--check']) == 0


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_measure_logits_against_a_hand_computation():
    torch.manual_seed(0)
    model, x = _Tiny().eval(), torch.randn(3, 8)
    got = mixed_precision.measure_logits(model, x)
    ref = model(x).detach()
    for name, dtype in (('bfloat16', torch.bfloat16), ('float16', torch.float16)):
        # autocast runs each linear in dtype and relu on its output; the cast model does the same here
        w1, b1, w2, b2 = (p.detach().to(dtype) for p in (model.fc1.weight, model.fc1.bias,
                                                          model.fc2.weight, model.fc2.bias))
        y = F.linear(torch.relu(F.linear(x.to(dtype), w1, b1)), w2, b2).float()
        expected = ((y - ref).abs().max() / ref.abs().max()).item()
        assert got[name]['autocast_err'] == pytest.approx(expected, rel=1e-6)
        assert got[name]['cast_err'] == pytest.approx(expected, rel=1e-6)
        assert 0 < expected < 0.05
    out = mixed_precision.with_official('van_b0', got, {'van_b0': {'float16': 2e-3, 'model_float16': 'n/a'}})
    assert out['float16']['autocast_bound'] == pytest.approx(3e-3)
    assert out['float16']['autocast_ratio'] == pytest.approx(got['float16']['autocast_err'] / 2e-3)
    assert out['float16']['cast_bound'] == 1e-2 and out['float16']['cast_ratio'] is None  # no official value
    assert out['bfloat16']['official_autocast_err'] is None and out['bfloat16']['autocast_bound'] == 5e-2


def test_parity_weights_give_the_official_logits():
    # the tool measures the tests' models: a parity variant loads its official-format checkpoint
    # (the official logits come out), the others their seeded, calibrated init at the default size
    model = mixed_precision.build_model('van_b0')
    with torch.no_grad():
        logits = model(mixed_precision.model_input('van_b0'))
    expected = torch.tensor(parity_fixture('van_b0')['expected_logits'])
    assert ((logits - expected).abs().max() / expected.abs().max()).item() < 1e-4
    assert mixed_precision.model_input('van_b1').shape == (2, 3, 224, 224)


def test_main_merges_per_model(tmp_path):
    path = tmp_path / 'mp.json'
    path.write_text(json.dumps({'models': {'other': {'bfloat16': {'autocast_err': 1.0}}}}))
    assert mixed_precision.main(['van_b0', '--no-features', '--json', str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc['models']['other'] == {'bfloat16': {'autocast_err': 1.0}}
    entry = doc['models']['van_b0']
    assert entry['weights'] == 'parity checkpoint' and entry['input_shape'] == [2, 3, 224, 224]
    # van_b0 has an official measurement: the test's bound is 1.5x it, and ours is within
    for dtype in ('bfloat16', 'float16'):
        assert entry[dtype]['autocast_bound'] == pytest.approx(1.5 * entry[dtype]['official_autocast_err'])
        assert entry[dtype]['autocast_err'] <= entry[dtype]['autocast_bound']
    assert doc['settings']['threads'] == 1 and '--no-features' in doc['settings']['command']
    assert doc['runs'][-1]['load_avg']['end'] is not None


def test_mixed_precision_section_explains_a_miss_from_tiny_logits():
    doc = _mixed()
    doc['models']['van_b0']['logits_absmax'] = 2.0e-6
    doc['models']['van_b0']['weights'] = 'seeded init'
    text = '\n'.join(model_cards.render_family_mixed(doc, ['van_b0']))
    assert "`van_b0` misses the test's bound: float16 autocast, float16 512x512 features not finite." in text
    assert 'peak at 2.0e-06' in text and '6.0e-08 apart (3.0% of that peak)' in text
    doc['models']['van_b0']['logits_absmax'] = 5.0
    assert 'peak at' not in '\n'.join(model_cards.render_family_mixed(doc, ['van_b0']))


def test_side_by_side_entries_of_one_card_each_get_a_table():
    doc = _side()
    pp = dict(doc['families']['van'], ours='van_pp', card='van', settings={'threads': 2, 'repeats': 7})
    doc['families']['van_pp'] = pp
    text = '\n'.join(model_cards.render_family_side_by_side(doc, 'van'))
    assert '### `van_b0`' in text and '### `van_pp`' in text
    assert text.count('| Step |') == 2
    assert '2 thread(s), 7 rounds after 1 warmup' in text and '1 thread(s), 3 rounds after 1 warmup' in text
    readme = model_cards.render_side_by_side(doc, ['van'])
    assert '| [van](van.md) | `van_b0` |' in '\n'.join(readme) and '| [van](van.md) | `van_pp` |' in '\n'.join(readme)


def test_side_by_side_command_is_the_recorded_argv_when_there_is_one():
    doc = _side()
    assert 'rebuilt from the JSON' in '\n'.join(model_cards.render_family_side_by_side(doc, 'van'))
    doc['runs'] = [{'families': ['van'], 'argv': ['--official-root', '/o', '--families', 'van']}]
    text = '\n'.join(model_cards.render_family_side_by_side(doc, 'van'))
    assert 'Command: `python tools/side_by_side.py --official-root /o --families van`.' in text
    assert 'rebuilt' not in text


def test_side_by_side_profile_is_shown_where_throughput_misses():
    doc = _side()
    profile = {'total_self_ms': {'ours': 210.0, 'official': 200.0},
               'operators': [{'name': 'aten::mm', 'ours': {'calls': 12, 'self_ms': 90.5},
                              'official': {'calls': 12, 'self_ms': 88.25}},
                             {'name': 'aten::gelu', 'ours': {'calls': 4, 'self_ms': 10.0},
                              'official': {'calls': 0, 'self_ms': 0.0}}]}
    doc['families']['van']['dense']['profile'] = profile  # dense misses (0.80x)
    doc['families']['van']['classifier']['profile'] = profile  # classifier meets the goal: not shown
    lines = model_cards.render_family_side_by_side(doc, 'van')
    text = '\n'.join(lines)
    assert text.count('Where the time of the') == 1 and 'Where the time of the dense step goes' in text
    assert _row(lines, '| `aten::mm`') == ['`aten::mm`', '12', '12', '90.5', '88.2']
    assert _row(lines, '| `aten::gelu`') == ['`aten::gelu`', '4', '0', '10.0', '0.0']
    assert _row(lines, '| all operators') == ['all operators', '', '', '210.0', '200.0']
    assert 'the 2 largest' in text


def test_training_command_names_only_its_model_even_when_the_run_was_cut_short():
    bench = _bench_with_train()
    # the run was stopped after van_b0: its models list is shorter than its argv
    bench['runs'] = [{'argv': ['van_b0', 'van_b1', '--train', '--threads', '1'], 'models': ['van_b0']}]
    text = '\n'.join(model_cards.render_family_training(bench, ['van_b0']))
    assert '1. `van_b0`: `python tools/benchmark.py van_b0 --train --threads 1`' in text


def test_runs_started_in_the_same_second_describe_their_own_models():
    # two benchmark processes started together and merged: each model's entries name the run
    # that lists it (its machine and command), not whichever came last
    entry = {'measured': {'run': 'T', 'commit': 'abc', 'load_avg': [1.0, 1.0]}}
    bench = {'runs': [{'started': 'T', 'models': ['m_a'], 'argv': ['m_a', '--train', '--precision', 'float32'],
                       'machine': {'cpu_model': 'CPU-A', 'torch': '2'}},
                      {'started': 'T', 'models': ['m_b'], 'argv': ['m_b', '--train', '--precision', 'bfloat16'],
                       'machine': {'cpu_model': 'CPU-B', 'torch': '2'}}],
             'models': {m: {'train': {'classifier@224x224/b32': {'float32': {'plain': entry}}}} for m in ('m_a', 'm_b')}}
    (text_a, _), = model_cards._train_provenance(bench, 'm_a')
    (text_b, _), = model_cards._train_provenance(bench, 'm_b')
    assert 'CPU-A' in text_a and '`python tools/benchmark.py m_a --train --precision float32`' in text_a
    assert 'CPU-B' in text_b and '`python tools/benchmark.py m_b --train --precision bfloat16`' in text_b


@pytest.mark.parametrize('median, q25, q75, expected', [
    (12.345, 12.0, 12.5, '12.35 [12.00–12.50]'), (0.33, 0.32, 0.34, '0.33 [0.32–0.34]'),
    # below 0.1 img/s two significant digits, the quartiles at the median's decimals
    (0.0178, 0.0171, 0.0182, '0.018 [0.017–0.018]'), (0.00204, 0.0019, 0.0021, '0.0020 [0.0019–0.0021]')])
def test_slow_speeds_keep_two_significant_digits(median, q25, q75, expected):
    stat = {'median': median, 'q25': q25, 'q75': q75}
    assert model_cards._stat_cell(stat, model_cards._speed_fmt(median)) == expected

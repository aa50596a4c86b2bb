"""tools/check_backends.py: every backend against its pattern's reference, what it skips and why,
a broken fast path fails it, and its JSON renders as the cards' backend tables."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo import attention

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))
import check_backends  # noqa: E402
import model_cards  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')
CPU = torch.device('cpu')


def test_every_op_has_a_sample_builder():
    assert set(attention.list_ops()) <= set(check_backends.SAMPLE_BUILDERS)


def test_an_op_without_a_builder_stops_the_tool(monkeypatch, capsys):
    ops = attention.list_ops()
    monkeypatch.setattr(attention, 'list_ops', lambda: (*ops, 'new_attention'))
    assert check_backends.main(['--no-models', '--dtypes', 'float32', '--repeats', '1', '--quick']) == 2
    err = capsys.readouterr().err
    assert "['new_attention'] without sample inputs" in err and 'SAMPLE_BUILDERS' in err


@pytest.mark.parametrize('op', attention.list_ops())
def test_every_backend_that_runs_here_agrees_with_the_reference(op):
    result = check_backends.check_op(op, attention.BACKENDS, ['float32', 'bfloat16'], CPU, repeats=1, quick=True)
    for backend, reason in attention.backend_status(op).items():
        entry = result['backends'][backend]
        if reason is not None:
            assert entry['status'] == 'skipped' and entry['reason'] == reason
            continue
        failed = [(r['dtype'], r['sample'], r['reason']) for r in entry['runs'] if r['status'] == 'failed']
        assert not failed, f'{op} / {backend}: {failed}'
        ran = [r for r in entry['runs'] if r['status'] == 'ran']
        assert ran, f'{op} / {backend}: no sample ran ({entry["reason"]})'
        for run in ran:
            assert run['forward']['max_rel'] <= check_backends.OP_TOLERANCE[run['dtype']]
            if run['backward'] is None:  # gradients of every floating input, bias included
                assert {'q', 'k', 'v'} <= set(run['grads']) or op == 'infuse_attention'
                assert run['grads']


def test_a_broken_fast_path_fails_the_check_and_is_named(monkeypatch, capsys):
    sdpa = F.scaled_dot_product_attention

    def off_by_a_little(*args, **kwargs):
        return sdpa(*args, **kwargs) * 1.01

    monkeypatch.setattr(F, 'scaled_dot_product_attention', off_by_a_little)
    code = check_backends.main(['--ops', 'dense_attention', '--no-models', '--dtypes', 'float32', '--repeats', '1',
                                '--quick'])
    out = capsys.readouterr().out
    assert code == 1
    failed = out.split('FAILED', 1)[1]
    assert 'dense_attention / sdpa / float32' in failed and 'tolerance' in failed
    assert 'dense_attention / reference' not in failed


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU skip list')
def test_cpu_output_starts_with_what_it_skipped_and_why(capsys):
    code = check_backends.main(['--ops', 'dense_attention', 'routed_attention', 'window_attention', '--no-models',
                                '--dtypes', 'float32', '--repeats', '1', '--quick'])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith('check_backends on cpu (no CUDA device)') and lines[1].startswith('Skipped')
    skipped = lines[2:lines.index(next(line for line in lines if line.startswith('Ran (')))]
    by_key = {line.strip().split(': ', 1)[0]: line.split(': ', 1)[1] for line in skipped}
    for op in ('dense_attention', 'window_attention'):
        assert by_key[f'{op} / xformers'] == attention.backend_status(op)['xformers']
        assert 'needs' in by_key[f'{op} / xformers']
    assert 'needs a CUDA device' in by_key['routed_attention / triton']
    assert by_key['routed_attention'] == 'no path in natten, xformers'
    # NATTEN serves bias-free windows forward only here: the biased calls and the backward are listed.
    natten = [line for line in skipped if 'window_attention / natten' in line]
    assert any('bias' in line for line in natten) and any('backward not checked' in line for line in natten)


def test_a_family_run_says_which_ops_ran_where_and_which_fell_back():
    result = check_backends.check_model('ravlt_tiny', ['reference', 'sdpa'], CPU, img_size=None)
    assert result['default'] == {'dense_attention': ['sdpa'], 'linear_attention': ['reference']}
    under_sdpa = result['backends']['sdpa']
    assert under_sdpa['ran'] == result['default'] and under_sdpa['status'] == 'ran'
    assert under_sdpa['fell_back'] == {'linear_attention': {
        'to': ['reference'], 'why': attention.backend_status('linear_attention')['sdpa']}}
    under_reference = result['backends']['reference']
    assert under_reference['ran'] == {'dense_attention': ['reference'], 'linear_attention': ['reference']}
    # The branches are live (no zero-init hides them): reference and SDPA differ, within tolerance.
    assert 0 < under_reference['max_rel'] <= check_backends.MODEL_TOLERANCE and under_reference['passed']


def _backends_doc() -> dict:
    run = dict(dtype='float32', sample='no bias', status='ran', reason=None, backward=None,
               forward=dict(max_abs=1e-7, max_rel=2.5e-7), grads=dict(q=dict(max_abs=1e-7, max_rel=3e-7)),
               passed=True, time_ms=dict(forward=0.1, forward_backward=0.4))
    refused = dict(run, sample='bias', status='skipped', reason="the 'natten' backend cannot apply an attention bias")
    forward_only = dict(run, grads={}, backward="the 'natten' backend is forward-only on cpu (no backward)",
                        time_ms=dict(forward=0.2, forward_backward=None))
    return {
        'machine': dict(torch='2.x', device='cpu', cuda_device=None, natten='0.21.7'), 'dtypes': ['float32'],
        'tolerances': {'op_max_rel': {'float32': 1e-4}, 'model_max_rel': 1e-4},
        'ops': {'window_attention': {'default': 'sdpa', 'backends': {
            'sdpa': dict(status='ran', reason=None, runs=[run]),
            'natten': dict(status='ran', reason=None, runs=[forward_only, refused]),
            'triton': dict(status='skipped', reason='cannot compute this pattern (it has no window_attention path)',
                           runs=[])}}},
        'families': {'litv2': {'models': {'litv2_small': {'default': {'window_attention': ['sdpa']}, 'backends': {
            'natten': dict(status='ran', ran={'window_attention': ['natten', 'sdpa']}, fell_back={},
                           max_abs=1e-6, max_rel=3e-7, passed=True),
            'triton': dict(status='fell back', ran={'window_attention': ['sdpa']}, max_abs=0.0, max_rel=0.0,
                           fell_back={'window_attention': dict(to=['sdpa'], why='cannot compute this pattern '
                                                              '(it has no window_attention path)')}, passed=True),
        }}}}, 'van': {'models': {'van_b0': {'default': {}, 'backends': {}}}}},
    }


def test_backend_tables_render_from_the_json(tmp_path):
    doc = _backends_doc()
    readme = '\n'.join(model_cards.render_backends(doc))
    assert '| window_attention | sdpa (default) | ran | 2.5e-07 / 3.0e-07 | 0.40 | — |' in readme
    natten = next(line for line in readme.splitlines() if line.startswith('| window_attention | natten'))
    assert natten.startswith('| window_attention | natten | ran | 2.5e-07 / — | 0.20 |')  # forward only, timed so
    assert 'refuses 1 of 2 samples (cannot apply an attention bias)' in natten
    assert 'backward not checked: is forward-only on cpu' in natten
    assert 'No path (the backend does not compute the pattern): window_attention: triton.' in readme
    assert '| `litv2_small` | natten | ran | window_attention | — | 3.0e-07 |' in readme
    assert ('| `litv2_small` | triton | skipped: no path | — | '
            'window_attention -> sdpa (no path) | 0.0e+00 |') in readme
    assert '| `van_b0` | any | no zoo.attention op' in readme

    card = 'Hand-written card.\n\n## More\n\ntext\n'
    section = model_cards.render_family_backends(doc, 'litv2')
    once = model_cards.update_family_card(card, section)
    assert once.startswith(card.rstrip('\n')) and '| `litv2_small` | natten | ran |' in once
    assert model_cards.update_family_card(once, section) == once  # replaced in place, not appended again
    doc['families']['litv2']['models']['litv2_small']['backends']['natten']['max_rel'] = 9e-3
    again = model_cards.update_family_card(once, model_cards.render_family_backends(doc, 'litv2'))
    assert '9.0e-03' in again and '3.0e-07 |' not in again.split(model_cards.BACKENDS_BEGIN)[1].split('natten')[1][:60]


def test_model_cards_writes_and_checks_the_family_sections(tmp_path):
    (tmp_path / 'backends.json').write_text(json.dumps(_backends_doc()))
    (tmp_path / 'bench.json').write_text('{}')
    (tmp_path / 'published.json').write_text('{}')
    out = tmp_path / 'cards'
    out.mkdir()
    (out / 'litv2.md').write_text('# LITv2\n')
    args = ['--bench', str(tmp_path / 'bench.json'), '--published', str(tmp_path / 'published.json'),
            '--backends', str(tmp_path / 'backends.json'), '--out', str(out), '--models', 'litv2_small', '--no-plots']
    assert model_cards.main(args) == 0
    assert '| `litv2_small` | natten | ran |' in (out / 'litv2.md').read_text()
    assert '## Attention backends' in (out / 'README.md').read_text()
    assert model_cards.main(args + ['--check']) == 0
    (out / 'litv2.md').write_text((out / 'litv2.md').read_text().replace('3.0e-07', '1.0e-09'))
    assert model_cards.main(args + ['--check']) == 1

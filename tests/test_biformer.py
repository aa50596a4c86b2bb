"""BiFormer: the routed attention against a plain loop, n_win, padding, backends, weights, mm.

The official logits are checked by tests/test_parity.py (fixture biformer_tiny, 224x224 and
224x448); the contract suite covers features, export and bad inputs.
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo.attention as za
from backbones.biformer import BiLevelRoutingAttention, GlobalAttentionLePE, checkpoint_filter_fn
from zoo.attention import routed as sdpa_backend
from zoo.checkpoint import CheckpointError
from zoo_testutils import assert_backends_agree_in_training, parity_checkpoint, parity_input


def _naive_bra(attn: BiLevelRoutingAttention, x: torch.Tensor) -> torch.Tensor:
    """BRA written out region by region and head by head (NHWC in and out), from the paper and
    the official code: zero padding to a multiple of n_win, routing by region means of q and k
    with the full-width scale, one softmax over the tokens of the selected regions, LePE on V."""
    n, C, heads = attn.n_win, attn.dim, attn.num_heads
    B, H0, W0, _ = x.shape
    Hp, Wp = math.ceil(H0 / n) * n, math.ceil(W0 / n) * n
    xp = x.new_zeros(B, Hp, Wp, C)
    xp[:, :H0, :W0] = x
    q, k, v = F.linear(xp, attn.qkv.weight, attn.qkv.bias).split(C, dim=-1)
    lepe = F.conv2d(v.permute(0, 3, 1, 2), attn.lepe.weight, attn.lepe.bias,
                    padding=attn.lepe.padding, groups=C).permute(0, 2, 3, 1)
    h, w, d, scale = Hp // n, Wp // n, C // heads, C ** -0.5
    windows = [(slice(i * h, (i + 1) * h), slice(j * w, (j + 1) * w)) for i in range(n) for j in range(n)]
    out = torch.zeros_like(v)
    for b in range(B):
        q_mean = torch.stack([q[b, rows, cols].mean((0, 1)) for rows, cols in windows])
        k_mean = torch.stack([k[b, rows, cols].mean((0, 1)) for rows, cols in windows])
        selected = torch.topk((q_mean * scale) @ k_mean.T, min(attn.topk, n * n), dim=-1).indices
        for r, (rows, cols) in enumerate(windows):
            qt = q[b, rows, cols].reshape(-1, C)
            kt = torch.cat([k[b][windows[s]].reshape(-1, C) for s in selected[r]])
            vt = torch.cat([v[b][windows[s]].reshape(-1, C) for s in selected[r]])
            o = torch.cat([torch.softmax(qt[:, i * d:(i + 1) * d] @ kt[:, i * d:(i + 1) * d].T * scale, -1)
                           @ vt[:, i * d:(i + 1) * d] for i in range(heads)], dim=-1)
            out[b, rows, cols] = o.reshape(h, w, C)
    y = F.linear(out + lepe, attn.proj.weight, attn.proj.bias)
    return y[:, :H0, :W0]


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
@pytest.mark.parametrize('n_win, topk, hw', [(3, 2, (7, 8)), (2, 4, (4, 6)), (4, 16, (5, 5)), (3, 20, (6, 9))],
                         ids=['padded', 'all-regions', 'one-token-regions', 'topk-above-regions'])
def test_routed_attention_matches_a_plain_loop(backend, n_win, topk, hw):
    torch.manual_seed(0)
    attn = BiLevelRoutingAttention(32, 2, n_win=n_win, topk=topk).eval()
    x = torch.randn(2, *hw, 32)
    with torch.no_grad(), za.use_backend(backend):
        torch.testing.assert_close(attn(x), _naive_bra(attn, x), atol=1e-5, rtol=1e-4)


def test_global_attention_uses_eight_heads_and_lepe_on_its_input():
    torch.manual_seed(0)
    attn = GlobalAttentionLePE(64).eval()
    assert attn.qkv.bias is None and attn.num_heads == 8
    x = torch.randn(1, 3, 5, 64)
    q, k, v = F.linear(x.reshape(1, 15, 64), attn.qkv.weight).reshape(1, 15, 3, 8, 8).unbind(2)
    logits = torch.einsum('bnhd,bmhd->bhnm', q, k) * 8 ** -0.5
    o = torch.einsum('bhnm,bmhd->bnhd', logits.softmax(-1), v).reshape(1, 3, 5, 64)
    lepe = attn.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(o + lepe), atol=1e-5, rtol=1e-4)


def test_n_win_changes_no_parameter():
    torch.manual_seed(0)
    classify = timm.create_model('biformer_tiny').eval()
    detect = timm.create_model('biformer_tiny', n_win=16).eval()
    detect.load_state_dict(classify.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        a, b = classify.forward_features(x), detect.forward_features(x)
    assert a.shape == b.shape and torch.isfinite(b).all()
    assert not torch.allclose(a, b)  # other regions, so other routing: n_win really is used
    with pytest.raises(ValueError, match='n_win must be a positive int'):
        timm.create_model('biformer_tiny', n_win=0)


@pytest.mark.parametrize('form', ['gathered in blocks', 'masked'])
def test_backends_agree_on_the_model_forward_and_backward(form, monkeypatch):
    # Non-divisible input (every stage pads). Gathered in blocks: a gather budget of zero, so
    # that the SDPA path splits the query regions into blocks and recomputes them in the
    # backward. Masked: every stage attends over its whole map under a region mask.
    if form == 'masked':
        monkeypatch.setattr(sdpa_backend, 'ROUTED_DENSE_SHARE', 0.0)
    else:
        monkeypatch.setattr(sdpa_backend, 'ROUTED_GATHER_BYTES', 0)
    x = torch.randn(1, 3, 45, 71)
    def make_model():
        torch.manual_seed(0)
        return timm.create_model('biformer_tiny', num_classes=10, drop_path_rate=0.)

    assert_backends_agree_in_training(make_model, x)


def test_official_checkpoint_keys_and_other_variant(tmp_path):
    path = parity_checkpoint('biformer_tiny', tmp_path / 'tiny.pth')
    official = torch.load(path, weights_only=True)['model']
    with torch.device('meta'):
        model = timm.create_model('biformer_tiny')
    converted = checkpoint_filter_fn(official, model)
    assert set(converted) == set(model.state_dict())
    assert checkpoint_filter_fn(converted, model) is converted  # our layout passes through
    with pytest.raises(CheckpointError, match='fits biformer_tiny'):
        timm.create_model('biformer_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_pretrained_download_failure_names_the_page(monkeypatch):
    def offline(url):
        raise ConnectionError('no network')

    monkeypatch.setattr('zoo.builder.download_url', offline)
    with pytest.raises(CheckpointError) as err:
        timm.create_model('biformer_small', pretrained=True)
    message = str(err.value)
    assert 'https://github.com/rayleizhu/BiFormer#imagenet-1k-trained-models' in message
    assert "pretrained_cfg_overlay=dict(file=" in message


def test_mm_backbone_with_n_win_and_output_norms(tmp_path):
    pytest.importorskip('mmdet')
    from mmengine.registry import MODELS
    import zoo.mm  # noqa: F401

    path = parity_checkpoint('biformer_tiny', tmp_path / 'tiny.pth')
    backbone = MODELS.build(dict(type='BiFormer', arch='tiny', out_norms=True, model_kwargs=dict(n_win=8),
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    backbone.init_weights()
    backbone.eval()
    assert backbone.model.n_win == 8
    reference = timm.create_model('biformer_tiny', n_win=8, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = parity_input('biformer_tiny')[:1, :, :97, :131]
    with torch.no_grad():
        outs = backbone(x)
        feats = reference.forward_intermediates(x, intermediates_only=True)
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    for out, feat, norm in zip(outs, feats, backbone.out_norms, strict=True):
        torch.testing.assert_close(out, norm(feat))
        assert out.shape[-2:] == feat.shape[-2:]

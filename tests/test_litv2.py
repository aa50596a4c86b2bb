"""LITv2: HiLo attention against the official math, any input size, official checkpoint layout."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F

from backbones.litv2 import HiLoAttention, checkpoint_filter_fn
from zoo.attention import use_backend
from zoo.checkpoint import CheckpointError
from zoo_testutils import DATA, parity_checkpoint, parity_fixture, parity_input, rel_err, rule_tensor


def _official_hilo(attn: HiLoAttention, tokens: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """HiLo written in the official detection backbone's token layout and operation order:
    zero-pad the (B, H*W, C) tokens' map to a multiple of ws, hi-fi heads attend inside each
    ws x ws window, lo-fi heads attend to keys/values of the average-pooled map, crop, and
    concatenate [hi-fi, lo-fi] channels. Plain matmul + softmax (no zoo.attention)."""
    B, N, C = tokens.shape
    ws, d = attn.ws, attn.head_dim
    x = tokens.reshape(B, H, W, C)
    x = F.pad(x, (0, 0, 0, (-W) % ws, 0, (-H) % ws))
    Hp, Wp = x.shape[1:3]
    outs = []
    if attn.h_heads:
        hg, wg = Hp // ws, Wp // ws
        win = x.reshape(B, hg, ws, wg, ws, C).transpose(2, 3)
        qkv = attn.h_qkv(win).reshape(B, hg * wg, ws * ws, 3, attn.h_heads, d).permute(3, 0, 1, 4, 2, 5)
        a = (qkv[0] @ qkv[1].transpose(-2, -1) * attn.scale).softmax(-1) @ qkv[2]
        a = a.transpose(2, 3).reshape(B, hg, wg, ws, ws, attn.h_dim).transpose(2, 3).reshape(B, Hp, Wp, -1)
        outs.append(attn.h_proj(a)[:, :H, :W])
    if attn.l_heads:
        q = attn.l_q(x).reshape(B, Hp * Wp, attn.l_heads, d).permute(0, 2, 1, 3)
        src = x if ws == 1 else F.avg_pool2d(x.permute(0, 3, 1, 2), ws).flatten(2).transpose(1, 2)
        kv = attn.l_kv(src).reshape(B, -1, 2, attn.l_heads, d).permute(2, 0, 3, 1, 4)
        a = (q @ kv[0].transpose(-2, -1) * attn.scale).softmax(-1) @ kv[1]
        outs.append(attn.l_proj(a.transpose(1, 2).reshape(B, Hp, Wp, attn.l_dim))[:, :H, :W])
    return torch.cat(outs, dim=-1).reshape(B, N, C)


@pytest.mark.parametrize('backend', ['reference', 'sdpa'])
@pytest.mark.parametrize('hw', [(6, 8), (7, 5), (1, 3)])
@pytest.mark.parametrize('ws,heads', [(2, 12), (1, 24), (3, 6)])
def test_hilo_matches_the_official_math_at_any_size(backend, hw, ws, heads):
    torch.manual_seed(0)
    dim = 16 * heads
    attn = HiLoAttention(dim, heads, window_size=ws, alpha=0.9).eval()
    x = torch.randn(2, *hw, dim)
    with torch.no_grad(), use_backend(backend):
        out = attn(x)
        ref = _official_hilo(attn, x.reshape(2, -1, dim), *hw)
    torch.testing.assert_close(out.reshape(2, -1, dim), ref, atol=1e-5, rtol=1e-4)


def test_head_split_and_official_shapes():
    model = timm.create_model('litv2_small')
    hilo, msa = model.stages[2].blocks[0].attn, model.stages[3].blocks[0].attn
    assert (hilo.l_heads, hilo.h_heads) == (10, 2)  # int(12 * 0.9) lo-fi heads
    assert (msa.l_heads, msa.h_heads) == (24, 0)  # ws = 1: plain attention through the lo-fi path
    sd = model.state_dict()
    assert sd['stages.2.blocks.0.attn.l_q.weight'].shape == (320, 384)
    assert sd['stages.2.blocks.0.attn.l_kv.weight'].shape == (640, 384)
    assert sd['stages.2.blocks.0.attn.h_qkv.weight'].shape == (192, 384)
    assert model.stages[0].blocks[0].attn is None and 'stages.0.blocks.0.norm1.weight' not in sd
    assert sd['stages.1.downsample.dconv.conv_offset.weight'].shape == (8, 96, 2, 2)


def test_checkpoint_filter_maps_official_keys():
    official = {k: torch.zeros(1) for k in [
        'patch_embed.proj.weight', 'layers.0.blocks.1.mlp.dwconv.dwconv.weight',
        'layers.0.downsample.dconv.conv_offset.weight', 'layers.2.downsample.norm_layer.running_var',
        'layers.3.blocks.0.attn.l_kv.bias', 'norm.weight', 'head.bias']}
    assert list(checkpoint_filter_fn(official, None)) == [
        'patch_embed.proj.weight', 'stages.0.blocks.1.mlp.dwconv.weight',
        'stages.1.downsample.dconv.conv_offset.weight', 'stages.3.downsample.norm.running_var',
        'stages.3.blocks.0.attn.l_kv.bias', 'norm.weight', 'head.bias']


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
    return str(parity_checkpoint('litv2_small', tmp_path_factory.mktemp('litv2') / 'litv2_s.pth'))


def test_both_deformable_conv_implementations_give_the_official_logits(small_checkpoint):
    ref = torch.tensor(parity_fixture('litv2_small')['expected_logits'])
    x = parity_input('litv2_small')
    for impl in ('torchvision', 'decomposed'):
        model = timm.create_model('litv2_small', pretrained=True, dcn_impl=impl,
                                  pretrained_cfg_overlay=dict(file=small_checkpoint)).eval()
        with torch.no_grad():
            assert rel_err(model(x), ref) <= 1e-4, impl


def test_padding_keeps_divisible_inputs_unchanged_and_crops_exactly(small_checkpoint):
    model = timm.create_model('litv2_small', pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=small_checkpoint)).eval()
    x = torch.randn(1, 3, 100, 132)  # stage maps 25x33, 13x17, 7x9, 4x5: every padding path
    with torch.no_grad():
        feats = model(x)
        assert [tuple(f.shape[-2:]) for f in feats] == [(25, 33), (13, 17), (7, 9), (4, 5)]
        # the stem pads 98x130 to 100x132 with zeros: the same features as padding by hand
        padded = model(F.pad(x[..., :98, :130], (0, 2, 0, 2)))
        unpadded = model(x[..., :98, :130])
    assert all(torch.equal(a, b) for a, b in zip(padded, unpadded))


def test_checkpoint_of_another_variant_is_refused_with_a_clear_error(small_checkpoint):
    with pytest.raises(CheckpointError, match='litv2_small'):
        timm.create_model('litv2_medium', pretrained=True, pretrained_cfg_overlay=dict(file=small_checkpoint))


def test_pretrained_cfgs_follow_the_official_evaluation():
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg('litv2_small.official_in1k')
    assert (cfg.crop_pct, cfg.interpolation, cfg.mean) == (0.875, 'bicubic', (0.485, 0.456, 0.406))
    assert cfg.url == 'https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth'
    cfg384 = get_pretrained_cfg('litv2_base.official_in1k_384')
    assert cfg384.input_size == (3, 384, 384) and cfg384.crop_pct == 1.0  # TEST.CROP False
    assert cfg384.url.endswith('/litv2_b_384.pth')


def _official_dense_weights(name: str) -> tuple[dict, dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
    """A dense parity fixture, its official backbone weights and its per-output norms (``norm{i}``)."""
    fx = json.loads((DATA / 'dense_parity' / f'{name}.json').read_text())
    sd, norms = {}, {}
    for key, shape, dtype, kind, *literal in fx['state_dict']:
        value = torch.tensor(literal[0], dtype=getattr(torch, dtype)).reshape(shape) if kind == 'literal' \
            else rule_tensor(key, shape)
        if key.startswith('norm'):
            index, param = key[len('norm'):].split('.')
            norms.setdefault(int(index), {})[param] = value
        else:
            sd[key] = value
    return fx, sd, norms


def _official_map_sizes(h: int, w: int) -> list[tuple[int, int]]:
    # The official dense backbone: the stem pads to a multiple of 4, each unpadded 2x2
    # stride-2 merge gives floor(size / 2).
    sizes = [(-(-h // 4), -(-w // 4))]
    for _ in range(3):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


def test_floor_merge_gives_the_official_dense_outputs_at_odd_sizes():
    # The official segmentation backbone's outputs (every output behind an nn.LayerNorm, eps
    # 1e-5) at an even size and at one whose stage maps are odd (51x69, 25x34, 12x17: the
    # merges drop the last row/column, HiLo pads 12x17 to 12x18).
    fx, sd, norms = _official_dense_weights('litv2_small_seg')
    model = timm.create_model('litv2_small', odd_merge='floor', num_classes=0).eval()
    missing, unexpected = model.load_state_dict(checkpoint_filter_fn(sd, model), strict=False)
    assert sorted(missing) == ['norm.bias', 'norm.weight'] and not unexpected  # the classifier's norm only
    for case in fx['cases']:
        x = torch.randn(*case['input']['shape'], generator=torch.Generator().manual_seed(case['input']['seed']))
        with torch.no_grad():
            feats = model.forward_intermediates(x, intermediates_only=True)
        assert [tuple(f.shape[-2:]) for f in feats] == _official_map_sizes(*x.shape[-2:])
        for i, (f, ref) in enumerate(zip(feats, case['outputs'])):
            out = F.layer_norm(f.permute(0, 2, 3, 1), (f.shape[1],), norms[i]['weight'], norms[i]['bias'],
                               eps=1e-5).permute(0, 3, 1, 2)
            assert list(out.shape) == ref['shape']
            idx = torch.randint(0, out.numel(), (256,), generator=torch.Generator().manual_seed(i))
            assert rel_err(out.flatten()[idx], torch.tensor(ref['samples'])) <= 1e-4, (case['input'], i)
            assert rel_err(out[0].mean(dim=(1, 2)), torch.tensor(ref['channel_means'])) <= 1e-4, (case['input'], i)


def _with_offsets(model: torch.nn.Module) -> torch.nn.Module:
    # Non-zero offset convs (they start at zero): the deformed taps then reach the odd last
    # row/column that 'floor' gives no output pixel of its own.
    for name, param in model.named_parameters():
        if 'conv_offset' in name:
            torch.nn.init.normal_(param, std=0.05)
    return model


def test_odd_merge_modes_differ_only_at_odd_maps():
    torch.manual_seed(0)
    pad = _with_offsets(timm.create_model('litv2_small', num_classes=0)).eval()
    floor = timm.create_model('litv2_small', num_classes=0, odd_merge='floor').eval()
    floor.load_state_dict(pad.state_dict())
    with torch.no_grad():
        even = torch.randn(1, 3, 96, 160)  # multiples of 32: every merged map is even
        assert all(torch.equal(a, b) for a, b in zip(pad.forward_intermediates(even, intermediates_only=True),
                                                     floor.forward_intermediates(even, intermediates_only=True)))
        odd = torch.randn(1, 3, 100, 132)  # stage-1 map 25x33
        shapes = {name: [tuple(f.shape[-2:]) for f in m.forward_intermediates(odd, intermediates_only=True)]
                  for name, m in (('pad', pad), ('floor', floor))}
    assert shapes['pad'] == [(25, 33), (13, 17), (7, 9), (4, 5)]  # ceil(H / stride)
    assert shapes['floor'] == _official_map_sizes(100, 132) == [(25, 33), (12, 16), (6, 8), (3, 4)]
    with pytest.raises(ValueError, match='odd_merge'):
        timm.create_model('litv2_small', odd_merge='crop')


def test_floor_merge_exports_to_onnx_with_dynamic_sizes(tmp_path):
    from zoo.export import check_onnx, export_onnx
    torch.manual_seed(0)
    model = _with_offsets(timm.create_model('litv2_small', features_only=True, odd_merge='floor')).eval()
    info = export_onnx(model, tmp_path / 'litv2_floor.onnx', input_size=(1, 3, 128, 160))
    assert info.dynamic_axes == ['batch', 'height', 'width']
    errors = check_onnx(model, info.path, torch.randn(1, 3, 100, 132))  # odd maps: floor merges
    assert max(errors.values()) <= 1e-4, errors

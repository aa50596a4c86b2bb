"""LookupViT specifics: the paper's block written out, the compressed grid, FLOPs, dense features."""
from __future__ import annotations

import importlib
import json

import pytest
import timm
import torch
import torch.nn.functional as F

from zoo.checkpoint import CheckpointError
from zoo.layers import InputError
from zoo.profiling import count_flops
from zoo_testutils import DATA

lookupvit = importlib.import_module('backbones.lookupvit')
DIMS = {'lookupvit_tiny': (192, 3), 'lookupvit_small': (384, 6), 'lookupvit_base': (768, 12)}


pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


def _tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model('lookupvit_tiny', **kwargs).eval()


@pytest.mark.parametrize('name', sorted(DIMS))
def test_param_count_formula(name):
    # Counted by hand from the block (see tests/data/official_params/lookupvit.json), then
    # compared with the recorded number that the contract test checks the model against.
    D = DIMS[name][0]
    block = 19 * D * D + 28.5 * D
    total = 12 * block + (3 * 16 * 16 * D + D) + 196 * D + 2 * D + (1000 * D + 1000)
    recorded = json.loads((DATA / 'official_params' / 'lookupvit.json').read_text())[name]
    assert int(total) == recorded


def _ln(x, norm):
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


def _mlp(x, mlp):
    return F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)


def _paper_block(blk, c, lookup, heads):
    # The block as the paper describes it, from the module's weights with einsum (no zoo ops).
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)

    def merge(t):
        return t.permute(0, 2, 1, 3).flatten(2)

    d = c.shape[-1] // heads
    g = blk.gather
    q = split(F.linear(_ln(c, blk.norm_gather_c), g.q.weight, g.q.bias))
    kv = F.linear(_ln(lookup, blk.norm_gather_l), g.kv.weight, g.kv.bias)
    k, v = split(kv[..., :c.shape[-1]]), split(kv[..., c.shape[-1]:])
    A = torch.einsum('bhmd,bhnd->bhmn', q, k).mul(d ** -0.5).softmax(-1)  # over lookup tokens
    c = c + F.linear(merge(torch.einsum('bhmn,bhnd->bhmd', A, v)), g.proj.weight, g.proj.bias)
    qkv = F.linear(_ln(c, blk.norm1), blk.attn.qkv.weight, blk.attn.qkv.bias).chunk(3, -1)
    qs, ks, vs = (split(t) for t in qkv)
    S = torch.einsum('bhmd,bhkd->bhmk', qs, ks).mul(d ** -0.5).softmax(-1)
    c = c + F.linear(merge(S @ vs), blk.attn.proj.weight, blk.attn.proj.bias)
    c = c + _mlp(_ln(c, blk.norm2), blk.mlp)
    vc = split(F.linear(_ln(c, blk.norm_infuse), blk.infuse.v.weight, blk.infuse.v.bias))
    lookup = lookup + F.linear(merge(torch.einsum('bhmn,bhmd->bhnd', A, vc)), blk.infuse.proj.weight,
                               blk.infuse.proj.bias)  # A reused, transposed
    lookup = lookup + _mlp(_ln(lookup, blk.norm_lookup), blk.lookup_mlp)
    return c, lookup


def test_block_matches_the_paper_written_out():
    model = _tiny().double()
    for p in model.parameters():  # non-trivial norms and biases
        with torch.no_grad():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    c = torch.randn(2, 9, 192, generator=g, dtype=torch.float64)
    lookup = torch.randn(2, 30, 192, generator=g, dtype=torch.float64)
    ours = model.blocks[0](c, lookup)
    ref = _paper_block(model.blocks[0], c, lookup, heads=3)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_block_widths():
    with torch.device('meta'):
        model = timm.create_model('lookupvit_base')
    blk = model.blocks[0]
    assert blk.mlp.fc1.out_features == 4 * 768  # compressed tokens: the ViT MLP
    assert blk.lookup_mlp.fc1.out_features == 384  # lookup tokens: ratio 0.5
    assert not hasattr(blk.infuse, 'q') and not hasattr(blk.infuse, 'k')  # reuses the gather's A


def test_compressed_tokens_are_the_resized_lookup_grid():
    model = _tiny()
    x = torch.randn(1, 3, 224, 160)
    c, lookup, grid = model._forward_stem(x)
    assert grid == (14, 10)
    assert c.shape == (1, 100, 192) and lookup.shape == (1, 140, 192)
    grid_map = lookup.transpose(1, 2).reshape(1, 192, 14, 10)
    expected = F.interpolate(grid_map, size=(10, 10), mode='bilinear', align_corners=False)
    torch.testing.assert_close(c, expected.flatten(2).transpose(1, 2))


@pytest.mark.parametrize('size', [3, 5, 7, 10, (4, 6)])
def test_compressed_size_changes_on_the_same_weights(size):
    model = _tiny(compressed_size=size)
    other = _tiny()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in other.parameters())
    other.load_state_dict(model.state_dict())  # same parameters whatever the grid
    other.set_compressed_size(size)
    x = torch.randn(2, 3, 224, 224)
    m = size * size if isinstance(size, int) else size[0] * size[1]
    with torch.no_grad():
        feats = other.forward_features(x)
        assert feats.shape == (2, m + 196, 192) and other.num_prefix_tokens == m
        torch.testing.assert_close(other(x), model(x))
        # both pooled token sets feed the head
        pooled = (feats[:, :m].mean(1) + feats[:, m:].mean(1)) / 2
        torch.testing.assert_close(other.forward_head(feats, pre_logits=True), pooled)


def test_last_block_lookup_branch_reaches_the_logits():
    # with both token sets pooled, the last block's infusion and lookup MLP get real gradients
    model = _tiny().train()
    model(torch.randn(1, 3, 64, 64)).square().sum().backward()
    last = model.blocks[-1]
    assert last.infuse.v.weight.grad.abs().sum() > 0 and last.lookup_mlp.fc2.weight.grad.abs().sum() > 0


def test_output_depends_on_the_compressed_grid():
    model = _tiny()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = []
        for s in (3, 10):
            model.set_compressed_size(s)
            outs.append(model(x))
    assert not torch.allclose(*outs)


def test_multi_resolution_training_draws_sizes():
    model = _tiny(multires_sizes=(3, 5, 7, 10), compressed_size=7).train()
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    seen = {model.forward_features(x).shape[1] - 16 for _ in range(24)}
    assert seen == {9, 25, 49, 100}
    model.eval()
    assert model.forward_features(x).shape[1] - 16 == 49


def test_default_size_uses_the_stored_position_embedding():
    model = _tiny()
    x = torch.randn(1, 3, 224, 224)
    pos = lookupvit.resample_grid(model.pos_embed, (14, 14), (14, 14))
    assert pos.data_ptr() == model.pos_embed.data_ptr()  # no resampling at the stored size
    # other sizes: bicubic resampling of the 14x14 grid (no new parameters)
    pos = lookupvit.resample_grid(model.pos_embed, (20, 12), (14, 14))
    grid = model.pos_embed.reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(pos, F.interpolate(grid, size=(20, 12), mode='bicubic', align_corners=False))
    with torch.no_grad():
        assert model(x).shape == (1, 1000)


def test_checkpoint_filter_resamples_another_grid():
    model = _tiny()
    sd = _tiny(img_size=384).state_dict()
    out = lookupvit.checkpoint_filter_fn(sd, model)
    assert out['pos_embed'].shape == model.pos_embed.shape
    model.load_state_dict(out, strict=True)


def test_flops_match_the_analytic_count():
    # MACs of the paper's block: linear layers on M compressed / N lookup tokens plus the
    # M x N cross-attention (gather 2MND, infuse MND) and the M x M self-attention (2M^2 D).
    D, N = 192, 196
    model = _tiny()
    for s in (3, 10):
        model.set_compressed_size(s)
        M = s * s
        block = D * D * (15 * M + 3 * N + 2 * 0.5 * N) + 3 * M * N * D + 2 * M * M * D
        total = 12 * block + N * 3 * 256 * D + D * 1000
        assert count_flops(model, (1, 3, 224, 224)).macs == int(total)


def test_too_small_input_and_no_weights_give_clear_errors():
    model = _tiny()
    with pytest.raises(InputError, match='at least 16x16'):
        model(torch.randn(1, 3, 15, 64))
    with pytest.raises(ValueError, match='positive'):
        model.set_compressed_size(0)
    with pytest.raises(CheckpointError, match='no direct download'):
        timm.create_model('lookupvit_tiny', pretrained=True)


def test_dense_features_feed_the_simple_pyramid():
    pytest.importorskip('mmengine')
    import necks  # noqa: F401  (registers SimpleFeaturePyramid)
    from necks.simple_fpn import SimpleFeaturePyramid
    model = _tiny(features_only=True, out_indices=(11,))
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        (feat,) = model(x)
        assert feat.shape == (1, 192, 16, 12)
        outs = SimpleFeaturePyramid(in_channels=192, out_channels=32, num_outs=4)(feat)
    assert [o.shape[-2:] for o in outs] == [(64, 48), (32, 24), (16, 12), (8, 6)]

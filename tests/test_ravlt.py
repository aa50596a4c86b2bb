"""RAVLT specifics: RALA / softmax attention against the official formulas, the RoPE buffers,
the 1x1-conv head, the official checkpoint layout (EMA weights, 4-D classifier) and cfgs.

The full-model parity (official logits at 224x224 and 256x320) is in test_parity.py.
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import get_pretrained_cfg

from backbones.ravlt import RavltAttention, RoPE2d, checkpoint_filter_fn
from zoo.checkpoint import CheckpointError
from zoo_testutils import parity_checkpoint, parity_input


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def _official_tables(head_dim: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    # RALA's RoPE: angle = 1 / 10000 ** linspace(0, 1, hd / 4), each repeated twice; rows then columns.
    angle = (1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4)).repeat_interleave(2).double()
    ang_h = torch.arange(h).double()[:, None] * angle
    ang_w = torch.arange(w).double()[:, None] * angle
    ang = torch.cat((ang_h[:, None].expand(h, w, -1), ang_w[None].expand(h, w, -1)), -1).reshape(h * w, -1)
    return ang.sin(), ang.cos()


def _official_attention(m: RavltAttention, x: torch.Tensor) -> torch.Tensor:
    """The official GateLinearAttentionNoSilu / VanillaSelfAttention forward, step by step."""
    B, C, H, W = x.shape
    n, d = m.num_heads, m.head_dim
    sin, cos = _official_tables(d, H, W)
    qkvo = m.qkvo(x)
    qkv, o = qkvo[:, :3 * C], qkvo[:, 3 * C:]
    lepe = m.lepe(qkv[:, 2 * C:])
    q, k, v = qkv.reshape(B, 3, n, d, H * W).permute(1, 0, 2, 4, 3)
    rope = lambda t: t * cos + _rotate_every_two(t) * sin  # noqa: E731
    if m.linear:
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        eff = torch.softmax(d ** -0.5 * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2), dim=-1)
        k = k * eff.transpose(-1, -2) * (H * W)
        z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (rope(k).transpose(-2, -1) * (H * W) ** -0.5) @ (v * (H * W) ** -0.5)
        res = rope(q) @ kv * z
    else:
        attn = torch.softmax(d ** -0.5 * rope(q) @ rope(k).transpose(-1, -2), dim=-1)
        res = attn @ v
    res = res.permute(0, 1, 3, 2).reshape(B, C, H, W)
    return m.proj((res + lepe) * o)


@pytest.mark.parametrize('linear', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
def test_attention_matches_official_formulas(linear, channels_last):
    torch.manual_seed(0)
    m = RavltAttention(32, 2, linear).double().eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    expected = _official_attention(m, x)
    sin, cos = RoPE2d(16).double()(5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(m(x, sin, cos), expected)


def test_linear_stages_cost_linear_memory():
    # RALA keeps a (head_dim x head_dim) state: no (N x N) tensor is ever built, so a 1 x 4096
    # token map runs in stage 1 of a tiny model without a 16M-entry attention matrix.
    m = RavltAttention(16, 1, linear=True).eval()
    sin, cos = RoPE2d(16)(1, 4096)
    seen = []
    hook = torch.overrides.TorchFunctionMode

    class Sizes(hook):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                seen.append(out.numel())
            return out

    with torch.no_grad(), Sizes():
        m(torch.randn(1, 16, 1, 4096), sin, cos)
    assert max(seen) <= 4 * 16 * 4096


def test_rope_buffer_is_loaded_and_used(tmp_path):
    path = parity_checkpoint('ravlt_tiny', tmp_path / 'ravlt_tiny.pth')
    model = timm.create_model('ravlt_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    for i in range(4):
        torch.testing.assert_close(model.stages[i].rope.angle,
                                   (1.0 / 10000 ** torch.linspace(0, 1, 16)).repeat_interleave(2))
    x = parity_input('ravlt_tiny')[:1, :, :64, :64]
    with torch.no_grad():
        y = model(x)
        model.stages[0].rope.angle.mul_(2.0)  # another buffer, other outputs
        assert not torch.allclose(model(x), y)
    assert 'stages.0.rope.angle' in model.state_dict()


def test_head_projection_pre_logits_and_new_classifier(tmp_path):
    model = timm.create_model('ravlt_tiny').eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 512, 2, 3)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, 1024) and model.num_features == 1024
        # pre-logits = mean over positions of SiLU(BN(conv1x1(features)))
        expected = F.silu(model.norm_head(model.conv_head(feats))).mean(dim=(2, 3))
        torch.testing.assert_close(pre, expected)
        torch.testing.assert_close(model(x), model.head(pre))
        model.reset_classifier(10)
        assert model(x).shape == (2, 10)
        model.reset_classifier(0, '')
        assert model(x).shape == (2, 1024, 2, 3)


def test_filter_converts_official_layout():
    model = timm.create_model('ravlt_tiny')
    official = {
        'patch_embed.proj.9.weight': torch.zeros(64, 32, 3, 3),
        'layers.0.downsample.reduction.weight': torch.zeros(128, 64, 3, 3),
        'layers.2.downsample.norm.running_var': torch.zeros(512),
        'layers.1.RoPE.angle': torch.zeros(32),
        'layers.3.blocks.1.norm1.norm.weight': torch.zeros(512),
        'layers.3.blocks.1.gamma_2': torch.arange(512.).reshape(1, 512, 1, 1),
        'layers.3.blocks.1.ffn.dwconv.weight': torch.zeros(1792, 1, 3, 3),
        'layers.0.blocks.0.attn.qkvo.weight': torch.zeros(256, 64, 1, 1),
        'proj.weight': torch.zeros(1024, 512, 1, 1),
        'norm.running_mean': torch.zeros(1024),
        'head.weight': torch.arange(2048.).reshape(2, 1024, 1, 1),
    }
    out = checkpoint_filter_fn(official, model)
    assert set(out) == {
        'stem.9.weight', 'stages.1.downsample.conv.weight', 'stages.3.downsample.norm.running_var',
        'stages.1.rope.angle', 'stages.3.blocks.1.norm1.weight', 'stages.3.blocks.1.ls2.gamma',
        'stages.3.blocks.1.mlp.dwconv.weight', 'stages.0.blocks.0.attn.qkvo.weight', 'conv_head.weight',
        'norm_head.running_mean', 'head.weight'}
    assert out['stages.3.blocks.1.ls2.gamma'].shape == (512,) and out['stages.3.blocks.1.ls2.gamma'][5] == 5
    assert out['head.weight'].shape == (2, 1024) and out['head.weight'][1, 3] == 1027
    assert all(name in dict(model.named_parameters()) or name in dict(model.named_buffers()) for name in out
               if name != 'head.weight')


def test_ema_weights_are_selectable(tmp_path):
    path = parity_checkpoint('ravlt_tiny', tmp_path / 'plain.pth')
    sd = torch.load(path, weights_only=True)['model']
    ema = {k: v * 0.5 if k == 'head.bias' else v for k, v in sd.items()}
    both = tmp_path / 'both.pth'
    torch.save({'model': sd, 'model_ema': ema}, both)
    overlay = dict(pretrained_cfg_overlay=dict(file=str(both)))
    default = timm.create_model('ravlt_tiny', pretrained=True, **overlay)
    chosen = timm.create_model('ravlt_tiny', pretrained=True, checkpoint_key='model_ema', **overlay)
    torch.testing.assert_close(default.head.bias, sd['head.bias'])
    torch.testing.assert_close(chosen.head.bias, ema['head.bias'])


def test_checkpoint_of_another_variant_names_it(tmp_path):
    path = parity_checkpoint('ravlt_tiny', tmp_path / 'ravlt_tiny.pth')
    with pytest.raises(CheckpointError, match='fits ravlt_tiny'):
        timm.create_model('ravlt_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize('name', ['ravlt_tiny', 'ravlt_small', 'ravlt_base', 'ravlt_large'])
def test_pretrained_cfg_is_the_official_evaluation(name):
    cfg = get_pretrained_cfg(f'{name}.official_in1k')
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.crop_pct == 0.875 and cfg.interpolation == 'bicubic' and cfg.input_size == (3, 224, 224)
    assert cfg.hf_hub_id == 'aldjalkdf/RAVLT' and cfg.hf_hub_filename == f'RAVLT_{name[6].upper()}.pth'
    assert math.isclose(int(256 * cfg.crop_pct), 224)


def test_layer_scale_inits_and_attention_types_follow_the_official_variants():
    for name, values in [('ravlt_tiny', (1, 1, 1, 1)), ('ravlt_small', (1, 1, 1, 1)),
                         ('ravlt_base', (1, 1, 1e-6, 1e-6)), ('ravlt_large', (1e-6,) * 4)]:
        m = timm.create_model(name, depths=(1, 1, 1, 1))  # the variant's other settings, one block per stage
        assert [m.stages[i].blocks[0].ls1.gamma[0].item() for i in range(4)] == pytest.approx(values)
        # linear attention (RALA) in stages 1-2, softmax attention in stages 3-4
        assert [m.stages[i].blocks[0].attn.linear for i in range(4)] == [True, True, False, False]


@pytest.mark.parametrize('channels_last', [False, True])
def test_pointwise_conv_equals_conv2d(channels_last):
    from zoo.layers import PointwiseConv2d
    torch.manual_seed(0)
    pw = PointwiseConv2d(6, 10)
    conv = torch.nn.Conv2d(6, 10, 1)
    conv.load_state_dict(pw.state_dict())  # same keys and shapes as a 1x1 nn.Conv2d
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(pw(x), conv(x), atol=1e-6, rtol=1e-5)
    assert pw(x).shape == (2, 10, 5, 7)

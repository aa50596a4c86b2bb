"""Build the official implementations' models from the user's checkouts (for tools/side_by_side.py).

Nothing here is official code: this module only imports the official files at run time from a
folder of checkouts (``--official-root``), with stand-ins for the few imports those files make
that are not part of the model (mmcv 1.x / mmdet 2.x / mmseg 0.x / mmengine registries and
checkpoint loaders, fairscale's checkpoint wrapper, fvcore's FLOP counter, LITv2's CUDA-only
deformable conv). The stand-ins never change what the official model computes, with one
exception stated in every result: LITv2's deformable conv (mmcv-style CUDA extension, no CPU
kernel) runs through ``torchvision.ops.deform_conv2d`` with the official layer's parameters.

Official files import top-level packages named ``models``, ``ops``, ``model``: build one family per
process (side_by_side.py runs one worker process per family, and every peak-memory child builds
one model).

``build(family=..., kind=..., root=...)`` is the ``'module:callable'`` entry point for
:func:`zoo.train_profiling.train_peak_memory`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = ['FAMILIES', 'OfficialFamily', 'build', 'disable_stochastic_layers']


@dataclass(frozen=True)
class OfficialFamily:
    """Where a family's official code lives and which of our models it is compared with.

    Args:
        ours: our timm model name (the family's smallest variant).
        folder: the checkout's folder name under ``--official-root``.
        repo: the official repository.
        commit: the commit measured (the one the parity fixtures were generated from).
        branch: the branch that commit is on.
        classifier: how the official classifier is built (for the notes).
        dense: how the official dense model is built (for the notes).
        ours_dense_kwargs: arguments of our ``features_only`` model that make it the same
            configuration as the official dense model.
        dense_norm_eval: the official dense backbone keeps its BatchNorms in eval mode while
            training (as our mm configs then do with ``norm_eval=True``): ours does too.
    """
    ours: str
    folder: str
    repo: str
    commit: str
    branch: str
    classifier: str
    dense: str
    ours_dense_kwargs: dict[str, Any] = field(default_factory=dict)
    dense_norm_eval: bool = False


FAMILIES: dict[str, OfficialFamily] = {
    'biformer': OfficialFamily(
        'biformer_tiny', 'BiFormer', 'https://github.com/rayleizhu/BiFormer',
        '1697bbbeafb8680524898f1dcaac10defd0604be', 'public_release',
        'models/biformer.py biformer_tiny()',
        'object_detection/models_mm/biformer_mm.py BiFormer_mm with the biformer_tiny arguments, n_win 7, '
        'auto_pad=True (the repository has dense recipes for S and B only)'),
    'davit': OfficialFamily(
        'davit_tiny', 'davit', 'https://github.com/dingmyu/davit',
        'fc79470d99babab23e45e0087790fa23cfd10a02', 'main',
        'timm/models/davit.py DaViT (DaViT-T arguments; the fork\'s relative timm imports served by modern timm)',
        'mmdet/mmdet/models/backbones/davit.py DaViT with the arguments of mmdet/configs/davit_maskrcnn_1x_coco.py'),
    'litv2': OfficialFamily(
        'litv2_small', 'LITv2', 'https://github.com/ziplab/LITv2',
        '7501c8662991cad6db780b61fac0886b56a76588', 'main',
        'classification/models/litv2.py LITv2 (LITv2-S arguments)',
        'detection/mmdet/models/backbones/litv2.py LITv2 with the arguments of '
        'detection/configs/litv2/retinanet_litv2_s_fpn_1x_coco.py'),
    'van': OfficialFamily(
        'van_b0', 'VAN-Classification', 'https://github.com/Visual-Attention-Network/VAN-Classification',
        'e19779b53a1b0828b51ecb4412d577541aee83a7', 'main',
        'models/van.py van_b0()',
        'the classifier\'s four stages (outputs of norm1-norm4 as maps; the repository has no dense backbone, '
        'VAN-Segmentation\'s is the same modules)'),
    'crossformer': OfficialFamily(
        'crossformer_tiny', 'CrossFormer-v1', 'https://github.com/cheerss/CrossFormer',
        '4fbf7501d6923f2564e8cb6d08a2d0138fc24a16', 'crossformer',
        'models/crossformer.py CrossFormer (CrossFormer-T arguments)',
        'models/crossformer_backbone.py CrossFormer (the dense class of the detection/segmentation factories) '
        'with the CrossFormer-T arguments, group_size 7, crs_interval 8/4/2/1 (dense recipes exist for S/B/L only)',
        ours_dense_kwargs={'lda_grouping': 'v1'}),
    'crossformer_pp': OfficialFamily(
        'crossformer_pp_small', 'CrossFormer-pp', 'https://github.com/cheerss/CrossFormer',
        '795201075f0066e78408882617312084e25aef61', 'main',
        'models/crossformer.py CrossFormer (configs/crossformer_pp/small_patch4_group_const_224.yaml arguments)',
        'models/crossformer_backbone_det.py CrossFormer with detection/crossformer_factory.py CrossFormer_S2\'s '
        'arguments and its configs\' group_size 7, crs_interval 8/4/2/1 (the ++-S detectors and segmenters)',
        ours_dense_kwargs={'group_size': 7, 'interval': (8, 4, 2, 1), 'lda_grouping': 'main'}),
    'shvit': OfficialFamily(
        'shvit_s1', 'SHViT', 'https://github.com/ysj9909/SHViT',
        '6a729ccf18e0b941714b529638bd3d9bacebcef0', 'main',
        'model/build.py shvit_s1()',
        'downstream/shvit.py Partial_ViT_Exp with model/build.py\'s SHViT_s1 arguments (dense recipe exists for S4 '
        'only; its train() keeps BatchNorms in eval mode)', dense_norm_eval=True),
    'ravlt': OfficialFamily(
        'ravlt_tiny', 'RALA', 'https://github.com/qhfan/RALA',
        'a86314f62103c21a1c7e6d826fe4cb0f5586e7b0', 'main',
        'classfication/RALA.py RAVLT_T()',
        'detection/mmdet/models/backbones/RALA.py GLTA with the arguments of detection/configs/RALA/maskrcnn_t_1x.py '
        '(its train() keeps BatchNorms in eval mode)'),
    'illama': OfficialFamily(
        'illama_tiny', 'iLLaMA', 'https://github.com/techmonsterwang/iLLaMA',
        'dfc93b974283cec7a1410122fc6d3a007a8c0039', 'main',
        'models/illama.py illama_tiny()',
        'illama_tiny(img_size=<input size>) (fixed position table), the patch tokens after each of the 12 blocks '
        'as maps (as our features_only); no dense backbone in the repository'),
}

# The folder name a checkout may also have (the RAVLT code lives in the repository named RALA).
_FOLDER_ALIASES = {'RALA': ('RAVLT',)}


def official_folder(root: str | Path, family: str) -> Path:
    """The checkout of ``family`` under ``root``, with a clear error when it is missing."""
    spec = FAMILIES[family]
    for name in (spec.folder, *_FOLDER_ALIASES.get(spec.folder, ())):
        path = Path(root) / name
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f'no checkout of {spec.repo} under {root}: expected the folder {spec.folder!r} '
        f'(git clone {spec.repo} {Path(root) / spec.folder} && git -C {Path(root) / spec.folder} checkout {spec.commit})')


# ---------------------------------------------------------------------------------------------------- stand-ins
class _Registry:
    """mmcv/mmdet/mmseg registries: ``register_module`` as a decorator that keeps the object."""

    def register_module(self, *args: Any, **kwargs: Any) -> Any:
        if args and callable(args[0]):
            return args[0]
        return lambda obj: obj


class _BaseModule(nn.Module):
    """mmcv.runner.BaseModule without the weight-init machinery (init does not change cost)."""

    def __init__(self, init_cfg: Any = None):
        super().__init__()
        self.init_cfg = init_cfg


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _logger(*args: Any, **kwargs: Any) -> Any:
    return types.SimpleNamespace(info=_noop, warn=_noop, warning=_noop)


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__path__ = []  # a package, so that submodule stand-ins import
    sys.modules[name] = mod
    return mod


class DeformConv2dPack(nn.Module):
    """The official LITv2 ``mm_modules.DCN`` DeformConv2dPack's parameters, ``torchvision.ops.deform_conv2d``'s op.

    The official layer is a CUDA-only extension; this is the same computation (offsets from
    ``conv_offset``, one deformable group, no modulation) on any device.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 dilation: int = 1, groups: int = 1, deformable_groups: int = 1, im2col_step: int = 32,
                 bias: bool = True, lr_mult: float = 0.1):
        super().__init__()
        if groups != 1 or deformable_groups != 1:
            raise ValueError('the stand-in covers groups=1, deformable_groups=1 (what LITv2 uses)')
        self.kernel_size, self.stride, self.padding, self.dilation = map(_pair, (kernel_size, stride, padding, dilation))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.conv_offset = nn.Conv2d(in_channels, 2 * self.kernel_size[0] * self.kernel_size[1], self.kernel_size,
                                     self.stride, self.padding)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import deform_conv2d
        return deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation)


def _trunc_normal_init(module: nn.Module, std: float = 1., bias: float = 0., **kwargs: Any) -> None:
    nn.init.trunc_normal_(module.weight, std=std)
    if getattr(module, 'bias', None) is not None:
        nn.init.constant_(module.bias, bias)


def _constant_init(module: nn.Module, val: float, bias: float = 0.) -> None:
    nn.init.constant_(module.weight, val)
    if getattr(module, 'bias', None) is not None:
        nn.init.constant_(module.bias, bias)


def _build_norm_layer(cfg: dict[str, Any], num_features: int, postfix: Any = '') -> tuple[str, nn.Module]:
    # SyncBN trains as BN in a single process.
    if cfg.get('type') not in ('BN', 'SyncBN', 'BN2d'):
        raise ValueError(f'stand-in build_norm_layer covers BN/SyncBN, got {cfg}')
    return f'bn{postfix}', nn.BatchNorm2d(num_features)


def _vit_init(module: nn.Module, *args: Any, **kwargs: Any) -> None:
    # old timm's _init_vit_weights, as the DaViT fork applies it
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def install_stand_ins() -> None:
    """Put the stand-ins for the non-model imports of the official files into ``sys.modules``.

    They shadow the installed mmcv/mmdet/mmseg/mmengine (2.x/3.x) in this process: call it only
    in a process that builds official models.
    """
    backbones = _Registry()
    _module('mmcv_custom', load_checkpoint=_noop, _load_checkpoint=_noop, load_state_dict=_noop)
    _module('fairscale')
    _module('fairscale.nn')
    _module('fairscale.nn.checkpoint', checkpoint_wrapper=lambda m, **k: m)
    _module('fvcore')
    _module('fvcore.nn', FlopCountAnalysis=None, flop_count_table=None)
    for pkg in ('mmdet', 'mmseg'):
        _module(pkg)
        _module(f'{pkg}.utils', get_root_logger=_logger)
        _module(f'{pkg}.models')
        _module(f'{pkg}.models.builder', BACKBONES=backbones, NECKS=_Registry())
        _module(f'{pkg}.models.backbones')
        _module(f'{pkg}.registry', MODELS=_Registry())
    _module('mmcv')
    _module('mmcv.runner', load_checkpoint=_noop, _load_checkpoint=_noop, BaseModule=_BaseModule,
            ModuleList=nn.ModuleList)
    _module('mmcv.cnn', build_norm_layer=_build_norm_layer, constant_init=_constant_init,
            trunc_normal_init=_trunc_normal_init)
    _module('mmcv.cnn.bricks')
    _module('mmcv.cnn.bricks.transformer', FFN=None, build_dropout=_noop)
    _module('mmcv.cnn.utils')
    _module('mmcv.cnn.utils.weight_init', trunc_normal_=nn.init.trunc_normal_, constant_init=_constant_init,
            normal_init=_noop, trunc_normal_init=_trunc_normal_init)
    _module('mmengine')
    _module('mmengine.runner')
    _module('mmengine.runner.checkpoint', load_state_dict=_noop, CheckpointLoader=None)
    _module('mmengine.logging', MMLogger=None)
    for name in ('mm_modules', 'mm_modules.DCN', 'mm_modules.DCN.modules'):
        _module(name)
    _module('mm_modules.DCN.modules.deform_conv2d', DeformConv2dPack=DeformConv2dPack)
    # the dense files that import their registry relatively (from ..builder import BACKBONES)
    _module('official_dense')
    _module('official_dense.builder', BACKBONES=backbones)
    _module('official_dense.backbones')


@contextlib.contextmanager
def _timm_registration_off() -> Iterator[None]:
    """Official files decorate their factories with timm's ``register_model``: keep them out of
    timm's registry, where they would replace our models of the same names."""
    import timm.models
    import timm.models._registry as registry
    targets = [timm.models, registry]
    with contextlib.suppress(ImportError):
        import timm.models.registry as old_registry  # deprecated alias some official files import
        targets.append(old_registry)
    saved = [(t, t.register_model) for t in targets]
    for target in targets:
        target.register_model = lambda fn=None, **kwargs: fn if fn is not None else (lambda f: f)
    try:
        yield
    finally:
        for target, original in saved:
            target.register_model = original


def _on_path(path: Path) -> None:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def _package(name: str, directory: Path) -> types.ModuleType:
    """A package for ``directory`` without running its ``__init__`` (official ``__init__`` files
    import training-only dependencies)."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(directory)]
    sys.modules[name] = mod
    return mod


def _load_file(name: str, path: Path, package: str | None = None) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    if package is not None:
        mod.__package__ = package
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class HookedStages(nn.Module):
    """Feature maps of a classifier's stages, collected by forward hooks while its own forward runs.

    For repositories without a dense backbone: the official forward runs unchanged (the final
    pooling and head are a negligible part of a step) and the outputs of ``stages`` (tokens
    ``(B, N, C)``) become the ``(B, C, H, W)`` maps the dense loss sees.

    Args:
        model: the official classifier.
        stages: the modules whose outputs are the feature maps.
        strides: each stage's stride (its map is ``ceil(H / stride) x ceil(W / stride)``).
        drop_last_token: the model appends a class token after the patch tokens.
    """

    def __init__(self, model: nn.Module, stages: list[nn.Module], strides: list[int], drop_last_token: bool = False):
        super().__init__()
        if len(stages) != len(strides):
            raise ValueError(f'{len(stages)} stages but {len(strides)} strides')
        self.model = model
        self.strides = list(strides)
        self.drop_last_token = drop_last_token
        self._captured: dict[int, torch.Tensor] = {}
        for i, stage in enumerate(stages):
            stage.register_forward_hook(lambda mod, args, out, i=i: self._captured.__setitem__(i, out))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._captured = {}
        self.model(x)
        maps = []
        for i, stride in enumerate(self.strides):
            tokens = self._captured[i][:, :-1] if self.drop_last_token else self._captured[i]
            h, w = -(-x.shape[2] // stride), -(-x.shape[3] // stride)
            maps.append(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w))
        self._captured = {}
        return maps


# ---------------------------------------------------------------------------------------------------- families
def _biformer(path: Path, kind: str) -> nn.Module:
    _on_path(path)  # ops.bra_legacy, models._common
    _package('models', path / 'models')
    mod = importlib.import_module('models.biformer')
    if kind == 'classifier':
        return mod.biformer_tiny()
    sys.modules['models_cls'] = sys.modules['models']
    sys.modules['models_cls.biformer'] = mod
    dense = _load_file('official_biformer_mm', path / 'object_detection/models_mm/biformer_mm.py')
    return dense.BiFormer_mm(
        pretrained=None, depth=[2, 2, 8, 2], embed_dim=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3], n_win=7,
        kv_downsample_mode='identity', kv_per_wins=[-1, -1, -1, -1], topks=[1, 4, 16, -2], side_dwconv=5,
        before_attn_dwconv=3, layer_scale_init_value=-1, qk_dims=[64, 128, 256, 512], head_dim=32,
        param_routing=False, diff_routing=False, soft_routing=False, pre_norm=True, pe=None, auto_pad=True)


def _davit(path: Path, kind: str) -> nn.Module:
    davit_args = dict(embed_dims=(96, 192, 384, 768), depths=(1, 1, 3, 1), num_heads=(3, 6, 12, 24), window_size=7,
                      mlp_ratio=4.)
    if kind == 'classifier':
        import timm.layers
        _module('official_davit')
        _module('official_davit.helpers', build_model_with_cfg=None, overlay_external_default_cfg=None)
        sys.modules['official_davit.layers'] = timm.layers
        _module('official_davit.registry', register_model=lambda fn: fn)
        _module('official_davit.vision_transformer', checkpoint_filter_fn=None, _init_vit_weights=_vit_init)
        mod = _load_file('official_davit.davit', path / 'timm/models/davit.py', 'official_davit')
        return mod.DaViT(patch_size=4, overlapped_patch=False, img_size=224, num_classes=1000, **davit_args)
    mod = _load_file('official_dense.backbones.davit', path / 'mmdet/mmdet/models/backbones/davit.py',
                     'official_dense.backbones')
    return mod.DaViT(qkv_bias=True, overlapped_patch=False, ffn=True, cpe_act=False, **davit_args)


def _litv2(path: Path, kind: str) -> nn.Module:
    args = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], mlp_ratio=4., qkv_bias=True,
                qk_scale=None, ape=False, patch_norm=True, use_checkpoint=False, alpha=0.9, local_ws=[0, 0, 2, 1])
    if kind == 'classifier':
        _on_path(path / 'classification')  # its files import models.<name> absolutely
        _package('models', path / 'classification/models')
        mod = importlib.import_module('models.litv2')
        return mod.LITv2(img_size=224, patch_size=4, in_chans=3, num_classes=1000, **args)
    mod = _load_file('official_litv2_det', path / 'detection/mmdet/models/backbones/litv2.py')
    return mod.LITv2(**args)


def _van(path: Path, kind: str) -> nn.Module:
    _package('models', path / 'models')
    model = importlib.import_module('models.van').van_b0()
    if kind == 'classifier':
        return model
    norms = [getattr(model, f'norm{i + 1}') for i in range(model.num_stages)]
    return HookedStages(model, norms, [4, 8, 16, 32])


def _crossformer(path: Path, kind: str) -> nn.Module:
    _on_path(path)
    _package('models', path / 'models')
    args = dict(patch_size=[4, 8, 16, 32], in_chans=3, num_classes=1000, embed_dim=64, depths=[1, 1, 8, 6],
                num_heads=[2, 4, 8, 16], group_size=[7, 7, 7, 7], mlp_ratio=4., qkv_bias=True, qk_scale=None,
                drop_rate=0., drop_path_rate=0., patch_norm=True, use_checkpoint=False, merge_size=[[2, 4]] * 3)
    if kind == 'classifier':
        mod = importlib.import_module('models.crossformer')
        return mod.CrossFormer(img_size=224, ape=False, **args)
    mod = importlib.import_module('models.crossformer_backbone')
    return mod.CrossFormer(img_size=[1280, 800], crs_interval=[8, 4, 2, 1], **args)


def _crossformer_pp(path: Path, kind: str) -> nn.Module:
    _on_path(path)
    _package('models', path / 'models')
    args = dict(patch_size=[4, 8, 16, 32], in_chans=3, num_classes=1000, embed_dim=64, depths=[2, 2, 18, 2],
                num_heads=[2, 4, 8, 16], qkv_bias=True, qk_scale=None, drop_rate=0.,
                drop_path_rate=0., patch_norm=True, use_checkpoint=False, merge_size=[[2, 4]] * 3,
                adaptive_interval=False, use_acl=True)
    if kind == 'classifier':
        mod = importlib.import_module('models.crossformer')
        # the classifier takes one MLP ratio per stage (config.py's default), the dense class one
        return mod.CrossFormer(img_size=224, group_size=[4, 4, 14, 7], crs_interval=[4, 2, 1, 1], ape=False,
                               mlp_ratio=[4.] * 4, group_type='constant', use_cpe=False, pad_type=0, no_mask=False,
                               **args)
    mod = importlib.import_module('models.crossformer_backbone_det')
    return mod.CrossFormer(img_size=[1024, 1024], group_size=[7, 7, 7, 7], crs_interval=[8, 4, 2, 1], mlp_ratio=4,
                           **args)


def _shvit(path: Path, kind: str) -> nn.Module:
    _package('model', path / 'model')
    build_mod = importlib.import_module('model.build')
    if kind == 'classifier':
        return build_mod.shvit_s1()
    mod = _load_file('official_shvit_dense', path / 'downstream/shvit.py')
    return mod.Partial_ViT_Exp(frozen_stages=-1, img_size=224, patch_size=16, **build_mod.SHViT_s1)


def _ravlt(path: Path, kind: str) -> nn.Module:
    if kind == 'classifier':
        return _load_file('official_ravlt_cls', path / 'classfication/RALA.py').RAVLT_T()
    mod = _load_file('official_dense.backbones.RALA', path / 'detection/mmdet/models/backbones/RALA.py',
                     'official_dense.backbones')
    return mod.GLTA(out_indices=(0, 1, 2, 3), embed_dims=[64, 128, 256, 512], depths=[2, 2, 6, 2],
                    num_heads=[1, 2, 4, 8], mlp_ratios=[3.5, 3.5, 3.5, 3.5], projection=1024,
                    layerscales=[True, True, True, True], layer_init_values=[1, 1, 1, 1])


def _illama(path: Path, kind: str, input_size: int = 224) -> nn.Module:
    _package('models', path / 'models')
    mod = importlib.import_module('models.illama')
    model = mod.illama_tiny(img_size=input_size)
    if kind == 'classifier':
        return model
    # the class token is appended last; the patch tokens after every block, as maps
    return HookedStages(model, list(model.blocks), [16] * len(model.blocks), drop_last_token=True)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    'biformer': _biformer, 'davit': _davit, 'litv2': _litv2, 'van': _van, 'crossformer': _crossformer,
    'crossformer_pp': _crossformer_pp, 'shvit': _shvit, 'ravlt': _ravlt, 'illama': _illama,
}


def disable_stochastic_layers(model: nn.Module) -> nn.Module:
    """Stochastic depth and dropout off (both draw random numbers per step, and the recipes'
    rates differ from our defaults): the same deterministic step on both sides."""
    for module in model.modules():
        if hasattr(module, 'drop_prob'):
            module.drop_prob = 0.
        if isinstance(module, nn.Dropout):
            module.p = 0.
    return model


def build(family: str, kind: str, root: str, input_size: int = 224) -> nn.Module:
    """Build the official model of ``family`` for a training step of ``kind`` (train mode).

    Args:
        family: a key of :data:`FAMILIES`.
        kind: ``'classifier'`` (logits) or ``'dense'`` (a sequence of feature maps).
        root: the folder holding the checkouts (see :data:`FAMILIES` for the folder names).
        input_size: the square input size of the step (only iLLaMA builds for it).
    """
    if family not in FAMILIES:
        raise ValueError(f'family must be one of {", ".join(FAMILIES)}, got {family!r}')
    if kind not in ('classifier', 'dense'):
        raise ValueError(f"kind must be 'classifier' or 'dense', got {kind!r}")
    path = official_folder(root, family)
    install_stand_ins()
    with _timm_registration_off():
        builder = _BUILDERS[family]
        model = builder(path, kind, input_size) if family == 'illama' else builder(path, kind)
    if kind == 'classifier' and not hasattr(model, 'num_classes'):
        model.num_classes = 1000
    disable_stochastic_layers(model)
    if model.train() is None:  # official train() overrides (norm_eval) that do not return the module
        official_train = model.train

        def train(mode: bool = True) -> nn.Module:
            official_train(mode)
            return model
        model.train = train
    return model.train()

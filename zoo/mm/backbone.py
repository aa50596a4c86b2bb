"""One OpenMMLab backbone for every zoo model, plus per-family aliases.

``ZooBackbone(model_name='van_b2', ...)`` wraps the timm model's ``forward_intermediates``
and gives mm users what they expect: ``out_indices``, ``frozen_stages``, ``norm_eval``,
extra output norms, ``drop_path_rate``, ``with_cp``, and ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` that accepts official classification files (converted by the family's
``checkpoint_filter_fn``), the official dense backbones' files (their per-output norms
included) and files saved by mm runs. The same conversion serves ``load_from=``: a whole
detector or segmentor saved by the official dense code loads into a model with this backbone,
and a file whose backbone weights do not fit fails instead of leaving the backbone untouched.
Family aliases (``type='VAN', arch='b2'``) are thin subclasses registered next to it.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from timm.models import model_entrypoint
from timm.models._manipulate import group_parameters
from torch.nn.modules.batchnorm import _BatchNorm

from ..builder import download_url, matching_variants
from ..checkpoint import CheckpointError, check_state_dict, load_state_dict, summarise_keys
from ..registry import family_of, list_models, meta_model

__all__ = ['ZooBackbone', 'register_family_alias', 'OFFICIAL_OUT_NORM_KEYS']

# Where the official dense backbones keep their extra per-output norms, by family: the key
# prefix with ``{}`` for the stage index. Families not listed have none (VAN's outputs go
# through its stage norms, which the classification model has too).
OFFICIAL_OUT_NORM_KEYS = {
    'biformer': 'extra_norms.{}.',
    'davit': 'norm{}.',
    'litv2': 'norm{}.',
    'ravlt': 'extra_norms.{}.norm.',
}


def _family_filter(model_name: str):
    module = sys.modules[model_entrypoint(model_name).__module__]
    return getattr(module, 'checkpoint_filter_fn', None)


@MODELS.register_module()
class ZooBackbone(BaseModule):
    """Any registered zoo model as an OpenMMLab backbone returning a tuple of NCHW maps.

    Args:
        model_name: a registered model, e.g. ``'van_b2'`` (see ``python -m zoo list``).
        out_indices: stages whose outputs are returned (default ``(0, 1, 2, 3)``, or every
            stage of models with fewer, e.g. SHViT's three).
        frozen_stages: freeze the stem (0) and the first ``k`` stages (``k``); -1 freezes
            nothing. Frozen parts get ``requires_grad=False`` and stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode during training (frozen statistics).
        out_norms: extra LayerNorm2d per returned output, as the official dense recipes of
            some families add (``True`` for all outputs, or one bool per output).
        out_norm_eps: eps of those norms (official recipes differ: DaViT's use 1e-5).
        drop_path_rate: stochastic depth of the backbone.
        with_cp: gradient checkpointing (saves memory, costs a second forward).
        model_kwargs: further arguments of the model (family-specific, e.g. window sizes).
        init_cfg: mm init config; ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads an
            official classification checkpoint or one saved by an mm run.
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Sequence[int] | None = None,
            frozen_stages: int = -1,
            norm_eval: bool = False,
            out_norms: bool | Sequence[bool] = False,
            out_norm_eps: float = 1e-6,
            drop_path_rate: float = 0.,
            with_cp: bool = False,
            model_kwargs: dict[str, Any] | None = None,
            init_cfg: dict | list[dict] | None = None,
    ):
        super().__init__(init_cfg=init_cfg)
        if model_name not in list_models():
            raise ValueError(f'unknown zoo model {model_name!r}; choose one of {list_models()}')
        self.model_name = model_name
        self.family = family_of(model_name)
        kwargs = dict(model_kwargs or {})
        if drop_path_rate:
            kwargs['drop_path_rate'] = drop_path_rate
        self._model_kwargs = kwargs
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        num_stages = len(model.feature_info)
        if out_indices is None:
            out_indices = tuple(range(min(4, num_stages)))
        if not out_indices or any(not -num_stages <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range for {num_stages} stages')
        self.out_indices = tuple(i % num_stages for i in out_indices)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')
        self.feature_channels = [model.feature_info[i]['num_chs'] for i in self.out_indices]
        self.feature_strides = [model.feature_info[i]['reduction'] for i in self.out_indices]
        # Coarse parameter groups, in order: the stem, then one group per stage (before pruning).
        self._stage_groups = list(group_parameters(model, model.group_matcher(coarse=True)).values())
        model.prune_intermediate_layers(list(self.out_indices), prune_head=True)
        model.set_grad_checkpointing(with_cp)
        self.model = model
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if isinstance(out_norms, bool):
            out_norms = [out_norms] * len(self.out_indices)
        if len(out_norms) != len(self.out_indices):
            raise ValueError('out_norms needs one entry per out_indices entry')
        self.out_norms = nn.ModuleList([
            LayerNorm2d(c, eps=out_norm_eps) if use else nn.Identity() for c, use in zip(self.feature_channels, out_norms)])
        self._freeze_stages()

    def _frozen_parameter_names(self) -> set[str]:
        names: set[str] = set()
        for group in self._stage_groups[:self.frozen_stages + 1]:
            names.update(group)
        return names

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = self._frozen_parameter_names()
        for name, param in self.model.named_parameters():
            if name in frozen:
                param.requires_grad = False
        # Modules whose parameters are all frozen also stop updating BN statistics / dropout.
        for module_name, module in self.model.named_modules():
            params = [f'{module_name}.{n}' if module_name else n for n, _ in module.named_parameters()]
            if params and all(p in frozen for p in params):
                module.eval()

    def train(self, mode: bool = True) -> ZooBackbone:
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
        return tuple(norm(f).contiguous() for norm, f in zip(self.out_norms, feats))

    def init_weights(self) -> None:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        if not pretrained:
            super().init_weights()
            return
        self.load_checkpoint(pretrained[-1]['checkpoint'], prefix=pretrained[-1].get('prefix'))
        self._is_init = True

    def load_checkpoint(self, checkpoint: str, prefix: str | None = None) -> None:
        """Load an official classification or dense checkpoint, or one saved by an mm run.

        A whole detector or segmentor file contributes its ``backbone.`` weights. Files in the
        official layout go through the family's ``checkpoint_filter_fn``; the parts the
        backbone does not have (the classifier, stages after the last output) are skipped,
        everything else must fit exactly. A classification file leaves the output norms at
        their initial values; a dense file must bring exactly the ones this backbone has.
        """
        path = download_url(checkpoint) if checkpoint.startswith(('http://', 'https://')) else checkpoint
        state_dict = load_state_dict(path, prefixes=('module.',))
        prefix = prefix if prefix is not None else ('backbone.' if any(k.startswith('backbone.') for k in state_dict) else '')
        if prefix:
            state_dict = _strip(state_dict, prefix)
        if any(k.startswith(('model.', 'out_norms.')) for k in state_dict):
            self.load_state_dict(state_dict, strict=True)  # saved from a ZooBackbone
            return
        converted = self.convert_official_state_dict(state_dict, what=f'checkpoint {checkpoint}')
        self.model.load_state_dict(_strip(converted, 'model.'), strict=True)
        norms = _strip(converted, 'out_norms.')
        if norms:  # a classification file has none: they keep their initial values
            self.out_norms.load_state_dict(norms, strict=True)

    def _official_out_norm_pattern(self) -> re.Pattern[str] | None:
        template = OFFICIAL_OUT_NORM_KEYS.get(self.family)
        if template is None:
            return None
        return re.compile('^' + re.escape(template).replace(re.escape('{}'), r'(\d+)') + '(.+)$')

    def convert_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], *,
                                    what: str = 'checkpoint', complete: bool = False) -> dict[str, torch.Tensor]:
        """The weights of an official backbone file (without ``backbone.``) in this module's keys.

        Args:
            state_dict: an official classification or dense backbone state dict.
            what: how the error messages call the weights.
            complete: every tensor of this backbone must come from the file (``load_from``):
                also the output norms, which a classification file does not have.

        Raises:
            CheckpointError: keys or shapes do not fit; the message names them, says which
                output norms the file has and which this config builds, and which variant
                the backbone weights fit.
        """
        norms, rest = {}, {}
        pattern = self._official_out_norm_pattern()
        for key, value in state_dict.items():
            match = pattern.match(key) if pattern else None
            if match:
                norms.setdefault(int(match.group(1)), {})[match.group(2)] = value
            else:
                rest[key] = value
        full = meta_model(self.model_name, **self._model_kwargs)
        filter_fn = _family_filter(self.model_name)
        official = rest
        if filter_fn is not None:
            rest = filter_fn(rest, full)
        ours = self.model.state_dict()
        pruned_away = {k for k in full.state_dict() if k not in ours}
        try:
            check_state_dict(self.model, rest, ignore=lambda k: k in pruned_away, what=what)
        except CheckpointError as e:
            matches = matching_variants(official, filter_fn, self.model_name)
            hint = f'\n  The backbone weights fit {", ".join(matches)}.' if matches else ''
            raise CheckpointError(f'{e}{hint}\n  (loading into the {self.model_name} backbone)') from None
        converted = {f'model.{k}': v for k, v in rest.items() if k in ours}
        converted.update(self._convert_out_norms(norms, what, complete or bool(norms)))
        return converted

    def _convert_out_norms(self, norms: dict[int, dict[str, torch.Tensor]], what: str,
                           required: bool) -> dict[str, torch.Tensor]:
        ours = {stage: j for j, stage in enumerate(self.out_indices) if not isinstance(self.out_norms[j], nn.Identity)}
        if not required or set(norms) == set(ours):
            out = {}
            for stage, params in norms.items():
                for name, value in params.items():
                    expected = self.out_norms[ours[stage]].state_dict().get(name)
                    if expected is None or expected.shape != value.shape:
                        raise CheckpointError(
                            f'the {what} has an output norm of stage {stage} with {name} {tuple(value.shape)}, '
                            f'which the {self.model_name} backbone\'s norm of that output does not have')
                    out[f'out_norms.{ours[stage]}.{name}'] = value
            return out
        template = OFFICIAL_OUT_NORM_KEYS.get(self.family, '(none)')
        raise CheckpointError(
            f'the {what} has extra output norms ({template}) on stages {sorted(norms) or "none"}, but this '
            f'{self.model_name} backbone (out_indices={self.out_indices}) builds them on stages {sorted(ours) or "none"}. '
            'The file belongs with a config whose out_indices and out_norms match those stages '
            '(see the released-weights table in the family\'s model card).')

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # Loading a whole detector or segmentor (mmengine's load_from, load_checkpoint, or
        # torch's load_state_dict): convert an official backbone layout in place before the
        # submodules read their keys, and refuse a file that would leave the backbone
        # untouched, which mmengine would only log.
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not keys:
            raise CheckpointError(
                f'the checkpoint has no weights for the backbone (no keys under {prefix!r}): loading it would leave the '
                f'{self.model_name} backbone as it was. Is it a classification file? Those load through the '
                "backbone's init_cfg=dict(type='Pretrained', checkpoint=...), not load_from.")
        if not any(k[len(prefix):].startswith(('model.', 'out_norms.')) for k in keys):
            official = {k[len(prefix):]: state_dict.pop(k) for k in keys}
            state_dict.update({prefix + k: v for k, v in self.convert_official_state_dict(
                official, what="checkpoint's backbone", complete=True).items()})
        missing = [k for k in self.state_dict() if prefix + k not in state_dict]
        if missing:
            raise CheckpointError(
                f'the checkpoint lacks {len(missing)} tensors of the {self.model_name} backbone under {prefix!r} '
                f'({summarise_keys(missing)}): loading it would leave them as they were.')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def register_family_alias(alias: str, model_prefix: str, default_arch: str) -> type[ZooBackbone]:
    """Register ``type=alias, arch=...`` as ``ZooBackbone(model_name=model_prefix + arch)``.

    The archs are the models of the default arch's family whose names start with the prefix
    (an empty prefix: the full model names, for families without a common prefix such as
    HaloNet's ``halonet26t``/``eca_halonext26ts``).

    Args:
        alias: the mm type name, e.g. ``'VAN'``.
        model_prefix: the model names' common prefix, e.g. ``'van_'``.
        default_arch: the arch used when none is given.
    """
    family = family_of(model_prefix + default_arch)
    archs = [n[len(model_prefix):] for n in list_models() if n.startswith(model_prefix) and family_of(n) == family]

    def __init__(self, arch: str = default_arch, **kwargs: Any) -> None:
        if arch not in archs:
            raise ValueError(f'{alias} has no arch {arch!r}; choose one of {archs}')
        ZooBackbone.__init__(self, model_name=model_prefix + arch, **kwargs)

    cls = type(alias, (ZooBackbone,), {
        '__init__': __init__,
        '__doc__': f'``ZooBackbone`` for the {alias} family: ``arch`` in {archs}.',
        '__module__': __name__,
    })
    MODELS.register_module(name=alias, module=cls)
    return cls

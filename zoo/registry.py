"""What the zoo registers with timm: its models, grouped by family."""
from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

import timm
import torch
from timm.models import generate_default_cfgs, get_pretrained_cfg, is_model, model_entrypoint
from timm.models._pretrained import DefaultCfg, PretrainedCfg
from timm.models._registry import _model_default_cfgs
from torch.overrides import TorchFunctionMode

__all__ = ['list_models', 'list_families', 'family_of', 'smallest_variant', 'meta_model', 'param_count', 'ModelInfo',
           'model_info', 'pretrained_tags', 'with_timm_tags', 'replaced_timm_module', 'timm_tags']

_PACKAGE = 'backbones.'

# Zoo models registered under a name that timm registers first -> the timm module whose entrypoint
# (and pretrained cfgs) the zoo's registration replaces; filled by with_timm_tags.
_REPLACED_TIMM: dict[str, ModuleType] = {}


def with_timm_tags(timm_module: ModuleType, names: list[str],
                   cfgs: Mapping[str, dict[str, Any] | PretrainedCfg] | None = None) -> dict[str, DefaultCfg]:
    """The ``default_cfgs`` for models that the zoo registers again under timm's own ``names``.

    timm's ``register_model`` drops every pretrained cfg of a name it registers again, so a
    family that takes over a timm name must register timm's tags itself: each name gets
    timm's ``DefaultCfg`` (timm's tags in timm's order, timm's default first, timm's values
    untouched), then the zoo's own tags from ``cfgs`` after them. ``timm.create_model`` with
    any of timm's tags, or with none, then gives timm's cfg exactly as before ``import zoo``.

    Args:
        timm_module: the timm module that registers ``names`` (``timm.models.davit``).
        names: the timm names the family registers again.
        cfgs: the zoo's own ``'name.tag'`` cfgs (``generate_default_cfgs`` input), for
            ``names`` or for other models of the family.
    """
    ours = generate_default_cfgs(dict(cfgs or {}))
    out = dict(ours)
    for name in names:
        theirs = timm_module.default_cfgs.get(name) if hasattr(timm_module, 'default_cfgs') else None
        if theirs is None:
            raise ValueError(f'{timm_module.__name__} registers no pretrained cfgs for {name!r}')
        extra = ours.get(name, DefaultCfg())
        clash = set(theirs.tags) & set(extra.tags)
        if clash:
            raise ValueError(f'{name}: the tags {sorted(clash)} are timm\'s; give the zoo\'s cfgs their own tags')
        out[name] = DefaultCfg(
            tags=deque([*theirs.tags, *extra.tags]),
            cfgs={**copy.deepcopy(theirs.cfgs), **extra.cfgs},
            is_pretrained=theirs.is_pretrained or extra.is_pretrained,
        )
        _REPLACED_TIMM[name] = timm_module
    return out


def replaced_timm_module(name: str) -> str | None:
    """The timm module whose model of the same name the zoo's registration replaces, if any."""
    module = _REPLACED_TIMM.get(name)
    return module.__name__ if module is not None else None


def timm_tags(name: str) -> list[str]:
    """timm's own pretrained tags of a name the zoo registers again (default first), else ``[]``."""
    module = _REPLACED_TIMM.get(name)
    return list(module.default_cfgs[name].tags) if module is not None else []


def list_models(family: str | None = None) -> list[str]:
    """Names of the zoo's registered models (all, or one family's), in registration order."""
    names = [n for n in timm.list_models() if model_entrypoint(n).__module__.startswith(_PACKAGE)]
    if family is not None:
        if family not in list_families():
            raise ValueError(f'unknown family {family!r}; the zoo has {list_families()}')
        names = [n for n in names if family_of(n) == family]
    return names


def list_families() -> list[str]:
    """The zoo's families (one ``backbones/<family>.py`` each)."""
    return sorted({family_of(n) for n in timm.list_models()
                   if model_entrypoint(n).__module__.startswith(_PACKAGE)})


def family_of(name: str) -> str:
    """The family (module name under ``backbones``) of a registered model."""
    if not is_model(name):
        raise ValueError(f'{name!r} is not a registered model')
    module = model_entrypoint(name).__module__
    if not module.startswith(_PACKAGE):
        raise ValueError(f'{name!r} is not a zoo model (it comes from {module})')
    return module[len(_PACKAGE):]


class _SkipInitOnMeta(TorchFunctionMode):
    """Value-only in-place ops (the initialisers' ``normal_``, ``uniform_``, ``zero_``...) do
    nothing on meta tensors.

    A meta tensor holds no values, yet PyTorch runs these ops' Python reference implementations on
    it: most of the time a large variant takes to build on the meta device goes to initialising
    it. Ops that change a shape, or act on real tensors, run as usual.
    """

    VALUE_ONLY = frozenset({'normal_', 'uniform_', 'zero_', 'fill_', 'erfinv_', 'mul_', 'add_', 'sub_', 'div_',
                            'clamp_', 'copy_', 'exponential_', 'bernoulli_', 'random_', 'log_', 'exp_', 'sqrt_',
                            'abs_', 'neg_', 'masked_fill_'})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (getattr(func, '__name__', None) in self.VALUE_ONLY and args and isinstance(args[0], torch.Tensor)
                and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def meta_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(name, **kwargs)`` on the meta device, uninitialised: its shapes and
    parameter count, without memory."""
    with torch.device('meta'), _SkipInitOnMeta():
        return timm.create_model(name, **kwargs)


@lru_cache(maxsize=None)
def param_count(name: str) -> int:
    """Parameter count of a model at its defaults (built by ``meta_model``)."""
    return sum(p.numel() for p in meta_model(name).parameters())


def smallest_variant(family: str) -> str:
    """The family's variant with the fewest parameters."""
    return min(list_models(family), key=param_count)


def pretrained_tags(name: str) -> list[str]:
    """Pretrained tags registered for a model (``official_in1k``...), the default first."""
    default_cfg = _model_default_cfgs.get(name)
    return [t for t in default_cfg.tags if t] if default_cfg is not None else []


@dataclass
class ModelInfo:
    name: str
    family: str
    params: int
    gmacs: float | None
    input_size: tuple[int, int, int]
    weights: list[str]
    license: str | None
    default_tag: str | None = None
    replaces: str | None = None  # the timm module whose model of this name the zoo's replaces
    timm_tags: list[str] | None = None  # timm's own tags of that name (kept, with timm's values)
    notes: dict[str, tuple[str, ...]] | None = None  # per tag with notes: where its values come from


def model_info(name: str, with_flops: bool = True) -> ModelInfo:
    """Facts about a registered model; GMACs (the papers' 'FLOPs') at the default input size."""
    cfg = get_pretrained_cfg(name)
    gmacs = None
    if with_flops:
        from .profiling import count_flops
        model = timm.create_model(name).eval()
        gmacs = count_flops(model, (1, *cfg.input_size)).gmacs
    tags = pretrained_tags(name)
    return ModelInfo(name, family_of(name), param_count(name), gmacs, tuple(cfg.input_size), tags, cfg.license,
                     default_tag=cfg.tag, replaces=replaced_timm_module(name), timm_tags=timm_tags(name),
                     notes={t: tuple(n) for t in tags if (n := get_pretrained_cfg(f'{name}.{t}').notes)})

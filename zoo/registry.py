"""What the zoo registers with timm: its models, grouped by family."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import timm
from timm.models import get_pretrained_cfg, is_model, model_entrypoint
from timm.models._registry import _model_pretrained_cfgs

__all__ = ['list_models', 'list_families', 'family_of', 'smallest_variant', 'ModelInfo', 'model_info',
           'pretrained_tags']

_PACKAGE = 'backbones.'


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


@lru_cache(maxsize=None)
def param_count(name: str) -> int:
    """Parameter count of a model at its defaults, built on the meta device (no memory, fast)."""
    import torch
    with torch.device('meta'):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


def smallest_variant(family: str) -> str:
    """The family's variant with the fewest parameters."""
    return min(list_models(family), key=param_count)


def pretrained_tags(name: str) -> list[str]:
    """Pretrained tags registered for a model (``official_in1k``...)."""
    return [t.split('.', 1)[1] for t in _model_pretrained_cfgs if t.split('.', 1)[0] == name and '.' in t]


@dataclass
class ModelInfo:
    name: str
    family: str
    params: int
    gmacs: float | None
    input_size: tuple[int, int, int]
    weights: list[str]
    license: str | None


def model_info(name: str, with_flops: bool = True) -> ModelInfo:
    """Facts about a registered model; GMACs (the papers' 'FLOPs') at the default input size."""
    cfg = get_pretrained_cfg(name)
    gmacs = None
    if with_flops:
        from .profiling import count_flops
        model = timm.create_model(name).eval()
        gmacs = count_flops(model, (1, *cfg.input_size)).gmacs
    tags = pretrained_tags(name)
    return ModelInfo(name, family_of(name), param_count(name), gmacs, tuple(cfg.input_size), tags, cfg.license)

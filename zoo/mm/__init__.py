"""OpenMMLab side of the zoo: ``custom_imports = dict(imports=['zoo.mm'])`` in an mm config.

Importing this registers ``ZooBackbone`` and the family aliases (``type='VAN', arch='b2'``)
in mmengine's root ``MODELS`` registry, which mmdet's and mmseg's registries fall back to,
plus the zoo's necks and heads, and applies the compatibility fixes for current PyTorch
(``zoo.mm.compat``). It needs the ``mm`` extra (mmengine, mmcv, mmdet, mmsegmentation).
"""
from . import compat  # noqa: F401  (first: fixes that the rest relies on)
from .backbone import ZooBackbone, register_family_alias

# alias -> (model name prefix, default arch)
FAMILY_ALIASES = {
    'VAN': ('van_', 'b0'),
}

for _alias, (_prefix, _default) in FAMILY_ALIASES.items():
    register_family_alias(_alias, _prefix, _default)

__all__ = ['ZooBackbone', 'register_family_alias', 'FAMILY_ALIASES']

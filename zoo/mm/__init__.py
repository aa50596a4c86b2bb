"""OpenMMLab side of the zoo: ``custom_imports = dict(imports=['zoo.mm'])`` in an mm config.

Importing this registers ``ZooBackbone`` and the family aliases (``type='VAN', arch='b2'``)
in mmengine's root ``MODELS`` registry, which mmdet's and mmseg's registries fall back to,
plus the zoo's necks, and applies the compatibility fixes for current PyTorch
(``zoo.mm.compat``). It needs the ``mm`` extra (mmengine, mmcv, mmdet, mmsegmentation).
"""
from . import compat  # noqa: F401  (first: fixes that the rest relies on)
from .backbone import ZooBackbone, register_family_alias
from .checkpoint import ZooRunner, load_detector_checkpoint

# alias -> (model name prefix, default arch)
FAMILY_ALIASES = {
    'VAN': ('van_', 'b0'),
    'BiFormer': ('biformer_', 'tiny'),
    'CrossFormer': ('crossformer_', 'small'),  # arch: tiny/small/base/large, pp_small/pp_base/pp_large/pp_huge
    'RAVLT': ('ravlt_', 'tiny'),
    'LITv2': ('litv2_', 'small'),
    'DaViT': ('davit_', 'tiny'),
    'SHViT': ('shvit_', 's4'),
    'iLLaMA': ('illama_', 'tiny'),
    'HaloNet': ('', 'halonet26t'),  # timm's names share no prefix: arch is the full model name
    'LookupViT': ('lookupvit_', 'tiny'),
}

for _alias, (_prefix, _default) in FAMILY_ALIASES.items():
    register_family_alias(_alias, _prefix, _default)

# The necks the papers' recipes need (necks/; no recipe needs a head that mm lacks, see
# heads/README.md): importing zoo.mm is enough, so configs need only
# custom_imports = dict(imports=['zoo.mm']).
import necks  # noqa: E402,F401

__all__ = ['ZooBackbone', 'ZooRunner', 'load_detector_checkpoint', 'register_family_alias', 'FAMILY_ALIASES']

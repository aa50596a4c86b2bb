"""The model zoo: vision backbones for timm and OpenMMLab, with official weights converted on load.

``import zoo`` registers every family with timm (``timm.create_model('van_b0', ...)``);
``import zoo.mm`` registers the OpenMMLab side (it needs the ``mm`` extra).
"""
__version__ = '0.1.0'

from . import checkpoint, layers, registry  # noqa: E402
from .registry import list_families, list_models  # noqa: E402

# The one place where the core names its plugins: the families (backbones/) build on zoo/ and
# register themselves with timm when imported; importing them here keeps `import zoo` (README,
# mm configs' custom_imports) registering every family. Nothing else under zoo/ imports them
# (tests/test_contract.py::test_core_does_not_import_the_families).
import backbones  # noqa: E402,F401

__all__ = ['checkpoint', 'layers', 'registry', 'list_models', 'list_families', '__version__']

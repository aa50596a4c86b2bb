"""mm necks that the papers' dense recipes need and mmdet/mmseg lack (registered in mmengine's root MODELS)."""
from . import efficientvit_fpn  # noqa: F401
from . import simple_fpn  # noqa: F401

"""The zoo's model families, one module each; importing this registers them with timm."""
from . import biformer  # noqa: F401
from . import crossformer  # noqa: F401
from . import davit  # noqa: F401
from . import halonet  # noqa: F401
from . import illama  # noqa: F401
from . import litv2  # noqa: F401
from . import lookupvit  # noqa: F401
from . import ravlt  # noqa: F401
from . import shvit  # noqa: F401
from . import van  # noqa: F401

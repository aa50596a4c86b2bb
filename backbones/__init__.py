"""The zoo's model families, one module each; importing this registers them with timm."""
from . import van  # noqa: F401

"""Building blocks that several families share and timm.layers lacks."""
from .input_check import InputError, validate_input
from .padding import crop_to, pad_to_multiple

__all__ = ['InputError', 'validate_input', 'pad_to_multiple', 'crop_to']

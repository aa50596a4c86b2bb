"""Building blocks that several families share and timm.layers lacks."""
from .input_check import InputError, validate_input
from .padding import crop_to, pad_to_multiple
from .pointwise import PointwiseConv2d
from .fusion import (batchnorm_affine, calibrate_batchnorm_statistics, fold_affine_into_conv_input,  # noqa: F401
                     fold_batchnorm_after_conv, fuse_conv_batchnorm, fuse_for_inference, scale_conv_output)
from .deform_conv import DeformConv2dPack, deform_conv2d, deform_conv2d_decomposed  # noqa: F401
from .rope import apply_rope, rope_1d, rope_2d, rope_2d_frequencies, rope_frequencies

_MLP_NAMES = ('Mlp', 'Recomputable', 'linear_of_recomputed', 'recompute_activations', 'swiglu_linear')

__all__ = ['InputError', 'validate_input', 'pad_to_multiple', 'crop_to',
           'apply_rope', 'rope_frequencies', 'rope_1d', 'rope_2d_frequencies', 'rope_2d', 'PointwiseConv2d',
           *_MLP_NAMES]


def __getattr__(name: str):
    # zoo.layers.mlp builds on timm's Mlp, and importing timm imports triton: loaded on first
    # use, so that zoo.attention (which uses zoo.layers) keeps optional packages unimported.
    if name in _MLP_NAMES:
        from . import mlp
        return getattr(mlp, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

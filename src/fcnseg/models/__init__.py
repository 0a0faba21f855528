"""FCN models: convolutionalization, backbones (features by stride), the FCN head, the registry, restoring."""

from .backbones import BACKBONES, Backbone, FeatureInfo
from .convolutionalize import convolutionalize, linear_to_conv
from .fcn import FCN
from .head import FCNHead
from .registry import HEADS, count_parameters, create_model, list_models
from .restore import load_init_weights, model_from_checkpoint
from .upsample import bilinear_kernel, bilinear_upsampler

__all__ = [
    "BACKBONES",
    "FCN",
    "HEADS",
    "Backbone",
    "FCNHead",
    "FeatureInfo",
    "bilinear_kernel",
    "bilinear_upsampler",
    "convolutionalize",
    "count_parameters",
    "create_model",
    "linear_to_conv",
    "list_models",
    "load_init_weights",
    "model_from_checkpoint",
]

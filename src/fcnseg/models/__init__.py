"""FCN models: convolutionalization, backbones (features by stride), the FCN head, the registry, restoring.

The names below load on first use (:mod:`fcnseg.core.lazy`): the backbones import torchvision.
"""

from fcnseg.core.lazy import lazy_attributes

_EXPORTS = {
    "BACKBONES": "fcnseg.models.backbones",
    "Backbone": "fcnseg.models.backbones",
    "FeatureInfo": "fcnseg.models.backbones",
    "convolutionalize": "fcnseg.models.convolutionalize",
    "linear_to_conv": "fcnseg.models.convolutionalize",
    "FCN": "fcnseg.models.fcn",
    "FCNHead": "fcnseg.models.head",
    "HEADS": "fcnseg.models.registry",
    "count_parameters": "fcnseg.models.registry",
    "create_model": "fcnseg.models.registry",
    "list_models": "fcnseg.models.registry",
    "load_init_weights": "fcnseg.models.restore",
    "model_from_checkpoint": "fcnseg.models.restore",
    "Converted": "fcnseg.models.ports",
    "convert_weights": "fcnseg.models.ports",
    "read_caffemodel": "fcnseg.models.caffemodel",
    "read_prototxt": "fcnseg.models.caffemodel",
    "bilinear_kernel": "fcnseg.models.upsample",
    "bilinear_upsampler": "fcnseg.models.upsample",
    "per_channel_upsampler": "fcnseg.models.upsample",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

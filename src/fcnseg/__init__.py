"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer and Darrell, 2015)."""

from fcnseg.core.lazy import lazy_attributes

__version__ = "0.1.0"
_EXPORTS = {
    "Predictor": "fcnseg.inference.predictor",
    "convolutionalize": "fcnseg.models.convolutionalize",
    "create_model": "fcnseg.models.registry",
    "list_models": "fcnseg.models.registry",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = ["Predictor", "__version__", "convolutionalize", "create_model", "list_models"]

"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer and Darrell, 2015)."""

from .inference.predictor import Predictor
from .models import convolutionalize, create_model, list_models

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__", "convolutionalize", "create_model", "list_models"]

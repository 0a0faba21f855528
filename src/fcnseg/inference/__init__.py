"""Inference: the engine (whole, tiled, multi-scale, flip), Predictor, image I/O, visual output and export."""

from fcnseg.inference.engine import choose_tile_size, segment_logits
from fcnseg.inference.images import ImageReadError, load_image, save_mask_png
from fcnseg.inference.memory import MemoryModel, estimate_memory
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.visualize import colorize, legend_image, overlay

__all__ = [
    "ImageReadError",
    "MemoryModel",
    "Predictor",
    "choose_tile_size",
    "colorize",
    "estimate_memory",
    "legend_image",
    "load_image",
    "overlay",
    "save_mask_png",
    "segment_logits",
]

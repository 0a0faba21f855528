"""Inference: the engine (whole, tiled, multi-scale, flip), Predictor, image I/O, visual output and export.

The names below load on first use (:mod:`fcnseg.core.lazy`).
"""

from fcnseg.core.lazy import lazy_attributes

_EXPORTS = {
    "CRFParams": "fcnseg.inference.crf",
    "dense_crf": "fcnseg.inference.crf",
    "choose_tile_size": "fcnseg.inference.engine",
    "segment_logits": "fcnseg.inference.engine",
    "ImageReadError": "fcnseg.inference.images",
    "load_image": "fcnseg.inference.images",
    "save_mask_png": "fcnseg.inference.images",
    "MemoryModel": "fcnseg.inference.memory",
    "estimate_memory": "fcnseg.inference.memory",
    "Predictor": "fcnseg.inference.predictor",
    "colorize": "fcnseg.inference.visualize",
    "legend_image": "fcnseg.inference.visualize",
    "overlay": "fcnseg.inference.visualize",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

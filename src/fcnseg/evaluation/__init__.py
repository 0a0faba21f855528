"""Evaluation: the confusion matrix and the paper's four metrics, the evaluation loop, report plots."""

from fcnseg.evaluation.evaluate import (
    EvalResult,
    Sample,
    class_names_colors,
    evaluate,
    format_table,
    model_state_kept,
    write_report,
)
from fcnseg.evaluation.metrics import ConfusionMatrix, metrics_from_matrix
from fcnseg.evaluation.plots import plot_confusion, plot_curves, plot_samples
from fcnseg.inference.visualize import colorize  # one implementation, shared with `fcnseg predict`

__all__ = [
    "ConfusionMatrix",
    "EvalResult",
    "Sample",
    "class_names_colors",
    "colorize",
    "evaluate",
    "format_table",
    "metrics_from_matrix",
    "model_state_kept",
    "plot_confusion",
    "plot_curves",
    "plot_samples",
    "write_report",
]

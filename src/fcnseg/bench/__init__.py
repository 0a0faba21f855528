"""Speed benchmark: a plain fp32 eager FCN-8s baseline and the measurements behind ``fcnseg bench``."""

from fcnseg.bench.baseline import BaselineFCN8s, baseline_from_fcnseg

__all__ = ["BaselineFCN8s", "baseline_from_fcnseg"]

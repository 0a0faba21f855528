"""The bottom layer that every part of fcnseg uses and that imports no other part.

- :mod:`fcnseg.core.checkpoint`: the checkpoint format (write, read, validate).
- :mod:`fcnseg.core.device`: the one device, precision (autocast) and memory-format policy.
- :mod:`fcnseg.core.io`: atomic file output.
- :mod:`fcnseg.core.machine`: the processor line that speed reports print.
"""

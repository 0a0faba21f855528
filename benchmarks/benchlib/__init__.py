"""Shared code of the scripts in ``benchmarks/``: the comparisons that stay outside the installed package.

- :mod:`benchlib.baseline`: FCN-8s VGG16 written as common PyTorch reimplementations write it (the speed baseline).
- :mod:`benchlib.networks`: seeded networks, image-like inputs, and the inference paths the suite compares.
- :mod:`benchlib.peers`: ONNX Runtime and OpenVINO run as their documentation runs a model.
- :mod:`benchlib.measure`: timing, FLOPs, the matrix-multiply peak, memory and agreement.
- :mod:`benchlib.training`: one SGD step, the baseline's and ``fcnseg train``'s.
- :mod:`benchlib.rows`: the rows of ``benchmarks/suite.py``; :mod:`benchlib.realdata`: agreement on real images.

The scripts run as ``.venv/bin/python benchmarks/NAME.py``, which puts ``benchmarks/`` on ``sys.path``; the tests
add it through ``pythonpath`` in ``pyproject.toml``.
"""

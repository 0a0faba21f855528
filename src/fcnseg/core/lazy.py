"""Package attributes imported on first use (PEP 562), so that ``import fcnseg`` loads nothing heavy.

``fcnseg predict`` on a converted model needs torch and the runtime, not torchvision (whose import pulls in
``torch._dynamo`` through ``torchvision.ops``; ``python -X importtime -c "import torchvision"`` shows the cost); a
package ``__init__`` that imported all of its modules would load it at every start.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: attribute ``name`` is ``exports[name]``'s attribute ``name``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it, such as ``{"Predictor": "fcnseg.inference.predictor"}``.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__

"""The package's layers (docs/DESIGN.md): each part imports only the parts below it, and no module import cycles.

Read from the source with ``ast``, so the test sees every import, including those inside functions, without
importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "fcnseg"

# Lower numbers are lower layers; a part may import its own modules and those of lower layers only.
LAYERS = {
    "core": 0,
    "models": 1,
    "data": 1,
    "inference": 2,
    "evaluation": 3,
    "training": 4,
    "serve": 5,  # the inference service, under the cli that starts it
    "cli": 6,
    "__init__": 7,  # fcnseg/__init__.py: the public names
    "__main__": 7,
}
# Only the CLI imports fcnseg modules inside functions: `fcnseg --help` builds every subcommand's parser, and the
# heavy parts (matplotlib through evaluation, the training loop) load only for the command that runs.
LAZY_IMPORTS_ALLOWED = {"cli"}


def _module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = SRC) -> list[tuple[str, bool]]:
    """``(imported fcnseg module, inside a function)`` for every import statement of ``path``."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(t, id(node) in nested) for t in targets if t == "fcnseg" or t.startswith("fcnseg.")]
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer() -> None:
    parts = {_part(_module_name(p)) for p in MODULES}
    assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS and to docs/DESIGN.md"


def _violations(path: Path, root: Path = SRC) -> list[str]:
    own = _part(_module_name(path, root))
    found = []
    for target, lazy in _imports(path, root):
        other = _part(target)
        if other != own and LAYERS[other] >= LAYERS[own]:
            found.append(f"{path.name}: fcnseg.{own} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[other]})")
        if lazy and own not in LAZY_IMPORTS_ALLOWED:
            found.append(f"{path.name} imports {target} inside a function; import it at the top")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path: Path) -> None:
    assert _violations(path) == []


def test_no_import_cycle_between_modules() -> None:
    graph = {_module_name(p): {t for t, _ in _imports(p)} for p in MODULES}  # imports in functions count too
    graph = {m: {t if t in graph else t.rpartition(".")[0] for t in ts} & set(graph) for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if target == module or target == "fcnseg" or module.startswith(target + "."):
                continue  # a package's own __init__ (runs first on any import) and self-references
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: an upward import inside a function is reported twice (upward, and inside a function)."""
    copy = tmp_path / "fcnseg" / "core" / "device.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(
        (PACKAGE / "core" / "device.py").read_text() + "\n\ndef _probe():\n    from fcnseg.inference import engine\n"
    )
    found = _violations(copy, root=tmp_path)
    assert len(found) == 2 and "(layer 2)" in found[0] and "inside a function" in found[1]


def test_prediction_starts_without_torchvision_and_lazy_names_resolve() -> None:
    """``fcnseg predict`` on a converted model loads no torchvision (1.3 s of imports); the public names still work."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from fcnseg.cli.main import build_parser\n"
        "build_parser('predict')\n"
        "import fcnseg, fcnseg.data, fcnseg.models, fcnseg.inference.predictor, fcnseg.inference.export\n"
        "print('torchvision' in sys.modules)\n"
        "fcnseg.create_model('fcn8s_squeezenet1_1', num_classes=2)\n"
        "print('torchvision' in sys.modules, 'create_model' in dir(fcnseg), fcnseg.data.IGNORE_INDEX)\n"
        "fcnseg.data.no_such_name\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
    assert run.stdout.split() == ["False", "True", "True", "255"], run.stderr
    assert "AttributeError: module 'fcnseg.data' has no attribute 'no_such_name'" in run.stderr

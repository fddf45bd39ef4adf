"""The server side and the watcher meet on the volume (``modelgen_watcher/volume/``), never in an import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "modelgen_watcher"


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative imports resolved)."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # a module's package, or an __init__'s own
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append(module)
            found.extend(f"{module}.{alias.name}" for alias in node.names)  # from .. import watcher
    return found


def _names(path: Path) -> list[str]:
    return [str(p.relative_to(PACKAGE)) for p in sorted(path.rglob("*.py"))]


def _within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


@pytest.mark.parametrize("source", _names(PACKAGE / "server"))
def test_no_server_module_imports_the_watcher(source):
    bad = [m for m in imported_modules(PACKAGE / source) if _within(m, "modelgen_watcher.watcher")]
    assert not bad, f"{source} imports {bad}: the server and the watcher meet only in modelgen_watcher/volume/"


@pytest.mark.parametrize("source", _names(PACKAGE / "watcher"))
def test_no_watcher_module_imports_the_server(source):
    bad = [m for m in imported_modules(PACKAGE / source) if _within(m, "modelgen_watcher.server")]
    assert not bad, f"{source} imports {bad}: the server and the watcher meet only in modelgen_watcher/volume/"


def test_the_check_sees_relative_and_absolute_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "modelgen_watcher" / "server"
    pkg.mkdir(parents=True)
    sample = pkg / "x.py"
    sample.write_text("from ..watcher.metrics import M\nfrom .. import watcher\nimport modelgen_watcher.watcher.daemon\n"
                      "from . import client\nfrom ..volume import fsio\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", tmp_path / "modelgen_watcher")
    found = imported_modules(sample)
    assert [m for m in found if _within(m, "modelgen_watcher.watcher")] == [
        "modelgen_watcher.watcher.metrics", "modelgen_watcher.watcher.metrics.M",
        "modelgen_watcher.watcher", "modelgen_watcher.watcher.daemon",
    ]
    assert "modelgen_watcher.server.client" in found and "modelgen_watcher.volume.fsio" in found


@pytest.mark.parametrize("source", [n for n in _names(PACKAGE / "modelside") if not n.endswith("__init__.py")])
def test_the_model_side_imports_the_standard_library_only(source):
    """It runs on the model's interpreter, where neither this package nor its dependencies are installed."""
    import sys

    imported = {m.split(".")[0] for m in imported_modules(PACKAGE / source)}
    outside = sorted(m for m in imported if m and m not in sys.stdlib_module_names and m != "__future__")
    assert not outside, f"{source} imports {outside}: modelside/ may use the standard library only"

"""One source for the version: the package's ``__version__``; everything else reads it or is held to it."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import modelgen_watcher

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_distribution_reports_the_packages_version() -> None:
    assert version("modelgen-watcher") == modelgen_watcher.__version__


def test_the_kubernetes_image_tags_are_the_packages_version() -> None:
    """Every kustomization that names an image tag (the base, the shared overlay) names the version."""
    files = sorted((ROOT / "deploy").rglob("kustomization.yaml"))
    tags = {f.relative_to(ROOT).as_posix(): set(re.findall(r'newTag:\s*"([^"]+)"', f.read_text())) for f in files}
    assert tags["deploy/k8s/base/kustomization.yaml"]
    assert {f: t for f, t in tags.items() if t and t != {modelgen_watcher.__version__}} == {}


def test_the_package_says_it_is_typed() -> None:
    assert (ROOT / "modelgen_watcher" / "py.typed").is_file()


def test_importing_the_package_stays_light_and_the_client_comes_when_asked() -> None:
    """The reference model imports the package once per request: no pydantic or watchdog for that."""
    import subprocess
    import sys

    code = ("import sys, modelgen_watcher as m; heavy = {'pydantic', 'watchdog'} & set(sys.modules); "
            "print(sorted(heavy)); print(m.Client.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "Client"]


def test_the_server_does_not_load_the_model_running_code() -> None:
    """The server never runs a model: importing it must not load the runner (ctypes, /proc sweeps)."""
    import subprocess
    import sys

    code = ("import sys, modelgen_watcher.server.http, modelgen_watcher.server.compat.server_api_model; "
            "print(sorted(m for m in sys.modules if m.startswith(('modelgen_watcher.runners.subprocess', "
            "'modelgen_watcher.watcher'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_file_of_the_page_is_package_data() -> None:
    """An editable install finds any file, a wheel only those pyproject names: every asset of the page must be."""
    import fnmatch
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["modelgen_watcher"]
    package = ROOT / "modelgen_watcher"
    assets = [str(p.relative_to(package)) for p in (package / "server" / "ui").rglob("*") if p.is_file()]
    assert any(a.endswith("index.html") for a in assets) and any(a.endswith(".json") for a in assets)
    assert [a for a in assets if not any(fnmatch.fnmatch(a, g) for g in globs)] == []

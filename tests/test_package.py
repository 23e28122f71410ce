"The exported package: imports without Jupyter or nbdev, public functions documented and typed, CLI wiring."
from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import agora

MODULES = sorted(m.name for m in pkgutil.walk_packages(agora.__path__, "agora.") if not m.name.endswith("_modidx"))


def test_import_needs_no_jupyter_or_nbdev():
    code = ("import sys, importlib; [importlib.import_module(m) for m in %r]; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'nbdev', 'jupyterlab', 'notebook', 'papermill', 'execnb'}); "
            "print(','.join(bad))" % MODULES)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_public_functions_have_docstrings_and_hints():
    missing = []
    for name in MODULES:
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if inspect.isfunction(obj) and obj.__module__ == name:
                if not inspect.getdoc(obj): missing.append(f"{name}.{attr}: docstring")
                if "return" not in obj.__annotations__: missing.append(f"{name}.{attr}: return type")
    assert not missing, missing


def test_core_never_imports_papers():
    offenders = []
    for name in MODULES:
        if name.startswith("agora.core"):
            src = open(importlib.import_module(name).__file__).read()
            if "agora.papers" in src: offenders.append(name)
    assert not offenders


def test_repo_root_found_from_any_directory(tmp_path):
    from agora.core.paths import find_root
    root = find_root()
    code = "from agora.core.paths import find_root; print(find_root())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root / "nbs", check=True)
    assert out.stdout.strip() == str(root)

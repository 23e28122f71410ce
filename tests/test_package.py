"The exported package: imports without Jupyter or nbdev, public functions documented and typed, CLI wiring."
from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import agora
import agora.papers

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
            relative = _papers_named(ast.parse(src), name.split(".")[:-1])  # `from ..papers.x import y` as well
            if "agora.papers" in src or relative or re.search(r"from\s+\.\.\s+import\s+.*\bpapers\b", src):
                offenders.append(name)
    assert not offenders, offenders


PAPER_NAME = re.compile(r"agora[./]papers[./](\w+)")  # a paper named in a string: "agora.papers.x:y", a path


def _papers_named(tree: ast.AST, package: list[str]) -> set[str]:
    "The papers a module (its syntax tree; `package`: its package as parts) imports or names in a string."
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import): targets = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            targets = [base + (node.module.split(".") if node.module else []) + [a.name] for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(PAPER_NAME.findall(node.value))
        found |= {t[2] for t in targets if t[:2] == ["agora", "papers"] and len(t) > 2}
    return found


def _notebook_code(path: Path) -> str:
    "The code cells of a notebook as one module (IPython magics and shell lines blanked)."
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    src = "\n".join("".join(c["source"]) for c in cells)
    return "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in src.splitlines())


def test_papers_never_import_other_papers():
    offenders = []
    pkg_root = Path(agora.papers.__path__[0])
    for f in sorted(pkg_root.rglob("*.py")):
        rel = f.relative_to(pkg_root)
        if len(rel.parts) < 2: continue  # agora/papers/__init__.py
        slug, package = rel.parts[0], ["agora", "papers", *rel.parts[:-1]]
        others = _papers_named(ast.parse(f.read_text()), package) - {slug}
        offenders += [f"agora/papers/{rel} -> {o}" for o in sorted(others)]
    from agora.core.paths import nbs_dir
    for nb in sorted((nbs_dir() / "papers").glob("*/*.ipynb")):
        slug = nb.parent.name
        others = _papers_named(ast.parse(_notebook_code(nb)), ["agora", "papers", slug]) - {slug}
        offenders += [f"nbs/papers/{slug}/{nb.name} -> {o}" for o in sorted(others)]
    assert not offenders, offenders


def test_paper_import_check_sees_every_form():
    src = ("from ..other.lm import f\nfrom .same import g\nfrom ...core.lm import h\nfrom .. import third\n"
           "import agora.papers.fourth.x\nfrom agora.papers import fifth\n"
           "importlib.import_module('agora.papers.sixth.m')\nENTRY = 'agora.papers.seventh.m:main'\n"
           "DIR = f'src/agora/papers/eighth/{x}'\n")
    found = _papers_named(ast.parse(src), ["agora", "papers", "mine"])
    assert found == {"other", "mine", "third", "fourth", "fifth", "sixth", "seventh", "eighth"}


def test_repo_root_found_from_any_directory(tmp_path):
    from agora.core.paths import find_root
    root = find_root()
    code = "from agora.core.paths import find_root; print(find_root())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root / "nbs", check=True)
    assert out.stdout.strip() == str(root)

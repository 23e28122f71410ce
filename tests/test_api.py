"The public API reads cleanly: one definition per public name, documented and typed protocol overrides."
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections import defaultdict

import agora
from agora.core import dialogue, tasks


def public_definitions() -> dict[str, list[str]]:
    "Public classes, functions and constants (in a module's `__all__`) by name: the modules that define them."
    defs = defaultdict(list)
    for m in pkgutil.walk_packages(agora.__path__, "agora."):
        if m.name.endswith("__main__"): continue
        mod = importlib.import_module(m.name)
        src = open(mod.__file__).read()
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) or inspect.isfunction(obj): defined = obj.__module__ == m.name
            else: defined = re.search(rf"^{name}\s*[:=]", src, re.M) is not None  # assigned here, not imported
            if defined: defs[name].append(m.name)
    return defs


def test_no_public_name_is_defined_twice_where_one_reader_sees_both():
    "The core defines each public name once, a paper never reuses a core name, nor do two modules of one paper."
    def paper(m: str) -> str: return m.split(".")[2] if m.startswith("agora.papers.") else "core"
    clashes = {}
    for name, mods in public_definitions().items():
        owners = [paper(m) for m in mods]
        if len(owners) != len(set(owners)) or ("core" in owners and len(owners) > 1): clashes[name] = mods
    assert not clashes, clashes  # two papers may share a name: a paper never imports another


def test_protocol_overrides_have_docstrings_and_type_hints():
    bad = []
    for mod, base, methods in [(tasks, tasks.Family, ("make", "verify", "feedback", "hint", "score_feedback")),
                               (dialogue, dialogue.Teacher, ("respond", "answer"))]:
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if not issubclass(cls, base) or cls is base: continue
            for m in methods:
                if (f := cls.__dict__.get(m)) is None: continue
                sig = inspect.signature(f)
                untyped = [p for p, v in sig.parameters.items() if p != "self" and v.annotation is inspect.Parameter.empty]
                if not f.__doc__ or untyped or sig.return_annotation is inspect.Signature.empty:
                    bad.append(f"{name}.{m}")
    assert not bad, bad

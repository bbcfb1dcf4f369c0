"""The code reads as one textbook: every layer says what its cache holds (CS231n style), and
the one helper for each job is the one the package uses."""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import npattention
from npattention.module import Module

PACKAGE = Path(npattention.__file__).parent


def _module_classes():
    for info in pkgutil.walk_packages(npattention.__path__, "npattention."):
        if info.name.startswith(("npattention.demos", "npattention.__main__")):
            continue
        mod = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, Module) and cls.__module__ == mod.__name__ and cls is not Module:
                yield cls


def test_every_layer_docstring_says_what_its_cache_holds():
    missing = sorted(f"{c.__module__}.{c.__name__}" for c in _module_classes()
                     if not re.search(r"\bcache\b", c.__doc__ or "", re.IGNORECASE))
    assert missing == [], ("add a line 'cache: (what forward keeps for backward)' to the docstring of "
                           f"{missing} (or 'cache: none of its own; ... keep theirs' for a container)")


def test_one_helper_per_job():
    """sigmoid (layers.sigmoid), sum-to-broadcast-shape (backend.sum_to_shape) and Xavier initialisation
    (layers.xavier_uniform) are written once; no private copies come back."""
    copies = {
        r"^def _?sigmoid\(": "npattention/layers.py",
        r"^def _(unbroadcast|sum_to|reduce_to|sum_to_shape)\(": None,
        r"^def _?xavier_uniform_?\(": "npattention/layers.py",
        r"^def sum_to_shape\(": "npattention/backend.py",
    }
    found = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        rel = "npattention/" + str(path.relative_to(PACKAGE))
        for pattern, home in copies.items():
            if re.search(pattern, text, re.M) and rel != home:
                found.append(f"{rel}: {pattern}")
    assert found == [], f"a private copy of a shared helper: {found}"

"""The Python the README and docs show imports: a name moved in the code must move in the docs too."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
IMPORT = re.compile(r"^\s*from (rewardlab[\w.]*) import ([\w, ]+)$", re.MULTILINE)


def documented_imports() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        for module, names in IMPORT.findall(doc.read_text()):
            found += [(doc.name, module, name.strip()) for name in names.split(",") if name.strip()]
    return found


def test_the_docs_show_some_imports():
    assert len(documented_imports()) >= 5  # the pattern still matches how the docs write imports


@pytest.mark.parametrize(("doc", "module", "name"), documented_imports())
def test_every_documented_import_exists(doc, module, name):
    assert hasattr(importlib.import_module(module), name), f"{doc}: from {module} import {name}"

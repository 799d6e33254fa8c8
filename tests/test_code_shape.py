"""The shape of the code, measured: small functions and modules, one direction of knowledge.

These are the acceptance measures of the "one training step, one scoring engine" redesign,
kept as tests so that they stay true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bayesvae"
MAX_FUNCTION = 120
MAX_FIT_BODY = 100
MAX_MODULE = 700
CONCRETE_PRIORS = (
    "GaussianPrior",
    "StandardNormal",
    "IBPPrior",
    "ARDPrior",
    "GroupPrior",
    "HierarchicalLatentPrior",
    "MixturePrior",
    "VampPrior",
)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _subpackage(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_no_module_over_700_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE}
    assert not long, long


def _code_lines(node) -> int:
    """Lines of a function from its first statement after the docstring to its end
    (the docstring is documentation: numpydoc parameter tables are long by design)."""
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str) and len(node.body) > 1:
        return node.end_lineno - node.body[1].lineno + 2  # the def line plus the code
    return node.end_lineno - node.lineno + 1


def test_no_function_over_120_lines_and_fit_under_100():
    long = {}
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node)
                if n > MAX_FUNCTION:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
                if path.name == "fit.py" and node.name == "fit":
                    doc = ast.get_docstring(node)
                    first = node.body[1] if doc else node.body[0]
                    body = node.end_lineno - first.lineno + 1
                    assert body < MAX_FIT_BODY, f"fit's body is {body} lines"
    assert not long, long


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bayesvae"):
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("bayesvae"):
                    yield a.name, []


def test_no_private_name_imported_across_subpackages():
    crossing = []
    for path in _modules():
        mine = _subpackage(path)
        for module, names in _imports(path):
            parts = module.split(".")[1:]
            if not parts:
                continue
            theirs = parts[0]
            if theirs == mine:
                continue
            private_module = any(p.startswith("_") for p in parts[1:])
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            # the root package's own private helpers (bayesvae._checks, bayesvae._registry) are
            # shared utilities of every subpackage; a subpackage's private parts are not
            if private_module or private_names:
                crossing.append(f"{path.relative_to(PACKAGE)}: from {module} import {', '.join(names)}")
    assert not crossing, crossing


def _code_names(path: Path) -> set[str]:
    """Identifiers the code uses (names, attributes, imports, string literals that are not
    docstrings); docstring examples may build a model with a particular prior."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.alias):
            out.add(node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.update(w.strip(".,:;()'\"") for w in node.value.split())
    return out


@pytest.mark.parametrize("name", CONCRETE_PRIORS)
def test_no_module_above_models_names_a_concrete_prior(name):
    above = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("models", "guides") or (rel.name == "__init__.py" and len(rel.parts) == 1):
            continue
        if name in _code_names(path):
            above.append(str(rel))
    assert not above, f"{name} is named in {above}"

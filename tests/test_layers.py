"""The import directions of the code base, checked on the source: the store contract and imaging at the bottom,
training and the service side by side above them, evaluation above both; the harness, the benchmark and the tests
outside, with nothing in the product importing them, and no test importing a ``conftest``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PRODUCT = {"contract", "imaging", "training", "service", "evaluation"}
# What each package may import of this repository (itself always).
MAY_IMPORT: dict[str, set[str]] = {
    "contract": set(),
    "imaging": {"contract"},
    "training": {"contract", "imaging"},
    "service": {"contract", "imaging"},
    "evaluation": {"contract", "imaging", "training", "service"},
    "harness": set(PRODUCT),
    "bench": PRODUCT | {"harness"},
    "tests": PRODUCT | {"harness", "bench"},
}
# Third-party libraries kept out of a layer: imaging is pure NumPy and Pillow; the contract is no web code.
MAY_NOT_USE: dict[str, set[str]] = {
    "imaging": {"torch", "torchvision", "fastapi", "starlette"},
    "contract": {"fastapi", "starlette"},
}


def _imports(source: str, package: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import in ``source``; relative imports resolve against ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            yield node.lineno, ".".join(part for part in (base, node.module or "") if part)


def _file_imports(path: Path) -> Iterator[tuple[int, str]]:
    return _imports(path.read_text(), path.relative_to(REPO_ROOT).parent.parts)


def _sources(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", MAY_IMPORT)
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    forbidden = (set(MAY_IMPORT) - allowed) | MAY_NOT_USE.get(package, set())
    violations = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in _sources(package)
        for line, module in _file_imports(path)
        if module.split(".")[0] in forbidden
    ]
    assert _sources(package), f"no sources found for {package}"
    assert violations == []


def test_no_test_module_imports_a_conftest() -> None:
    violations = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in _sources("tests")
        for line, module in _file_imports(path)
        if module.split(".")[-1] == "conftest"
    ]
    assert violations == []


def test_the_checker_sees_every_kind_of_import() -> None:
    source = "import torch\nfrom service.main import create_app\nfrom . import sibling\nfrom ..contract import x\n"
    modules = [module for _, module in _imports(source, ("imaging", "sub"))]
    assert modules == ["torch", "service.main", "imaging.sub", "imaging.contract"]

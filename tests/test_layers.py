"""The package's layers, held by reading its imports.

Every `.py` under harness/ is parsed with `ast`; every `import harness...` and `from harness... import ...` in it,
inside functions too, is checked against the layer table below. `from harness.x import y`, where `y` is a submodule,
counts as an import of `harness.x.y`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"

# The layer rule of docs/architecture.md: an import may only point to the same layer or down.
# Top to bottom; a module belongs to the first entry that is itself or one of its parents.
# harness.calibrate may not exist yet: its entry then matches nothing.
LAYERS: list[tuple[str, ...]] = [
    ("harness.plugin", "harness.cli", "harness.calibrate", "harness.__main__"),
    ("harness.report",),
    ("harness.store",),
    ("harness.gate",),
    ("harness.measure",),
    ("harness.pipelines",),
    ("harness.models", "harness.tasks"),
    ("harness.records", "harness.toggles", "harness"),
]
# Same layer, yet independent of each other.
INDEPENDENT: list[tuple[str, str]] = [("harness.models", "harness.tasks")]
# The pipelines never import each other; they share decoding, static_greedy, cache_api, attention and progress.
PIPELINES = ("harness.pipelines.eval", "harness.pipelines.search", "harness.pipelines.scoring",
             "harness.pipelines.detection")
# Nothing in the package imports these.
FORBIDDEN_ROOTS = ("research", "tests")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    statement: str  # the import as written
    importer: str  # the importing module, e.g. harness.gate.diff
    target: str  # the module imported, e.g. harness.records

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.statement!r}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """A module or package of the source tree (not the installed one: the tree is what is checked)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imports_of(path: Path) -> list[Import]:
    importer = module_name(path)
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    found = []
    for node in ast.walk(tree):
        statement = ast.unparse(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else ""
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, statement, importer, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = resolve_relative(importer, path.name == "__init__.py", node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if alias.name != "*" and is_module(submodule) else base
                found.append(Import(rel, node.lineno, statement, importer, target))
    return list(dict.fromkeys(found))  # `from harness.x import a, b` is one import of harness.x


SOURCES = sorted(PACKAGE.rglob("*.py"))
IMPORTS = [imp for path in SOURCES for imp in imports_of(path)]
HARNESS_IMPORTS = [imp for imp in IMPORTS if imp.target == "harness" or imp.target.startswith("harness.")]


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def owner(name: str) -> tuple[int, str]:
    """(layer index, table entry) of a module: the longest entry that is the module or one of its parents."""
    matches = [(len(entry), index, entry) for index, layer in enumerate(LAYERS) for entry in layer
               if within(name, entry)]
    if not matches:
        raise LookupError(f"{name} is in no layer of LAYERS")
    _, index, entry = max(matches)
    return index, entry


def describe(index: int) -> str:
    return f"layer {index + 1} ({', '.join(LAYERS[index])})"


def upward(imports: list[Import], layer: int) -> list[str]:
    """The imports of modules of this layer that point to a higher layer, as messages."""
    violations = []
    for imp in imports:
        if owner(imp.importer)[0] != layer:
            continue
        target_layer = owner(imp.target)[0]
        if target_layer < layer:
            violations.append(f"{imp.where()}: {imp.importer} ({describe(layer)}) may not import "
                              f"{imp.target} ({describe(target_layer)}, a higher layer)")
    return violations


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=lambda i: LAYERS[i][0].removeprefix("harness.") or "harness")
def test_no_import_points_up(layer: int) -> None:
    """A module of this layer imports nothing of a higher layer."""
    violations = upward(HARNESS_IMPORTS, layer)
    assert not violations, "imports pointing up the layers:\n" + "\n".join(violations)


@pytest.mark.parametrize("pair", INDEPENDENT, ids=lambda p: f"{p[0]}-{p[1]}")
def test_independent_modules_of_one_layer(pair: tuple[str, str]) -> None:
    violations = []
    for imp in HARNESS_IMPORTS:
        for one, other in (pair, pair[::-1]):
            if within(imp.importer, one) and within(imp.target, other):
                violations.append(f"{imp.where()}: {one} may not import {other} (same layer, kept independent)")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.rsplit(".", 1)[1])
def test_pipelines_do_not_import_each_other(pipeline: str) -> None:
    violations = []
    for imp in HARNESS_IMPORTS:
        if not within(imp.importer, pipeline):
            continue
        for other in PIPELINES:
            if other != pipeline and within(imp.target, other):
                violations.append(f"{imp.where()}: pipeline {pipeline} may not import pipeline {other} (what "
                                  "pipelines share lives in decoding, static_greedy, cache_api, attention, progress)")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("root", FORBIDDEN_ROOTS)
def test_package_imports_nothing_outside_it(root: str) -> None:
    violations = [f"{imp.where()}: {imp.importer} (the installed package) may not import {imp.target} "
                  f"({root}/ is not shipped)" for imp in IMPORTS if within(imp.target, root)]
    assert not violations, "\n".join(violations)


def test_the_table_places_every_top_level_module() -> None:
    """A new top-level module or folder of harness/ must be given a layer."""
    top_level = {f"harness.{path.stem}" for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    top_level |= {f"harness.{path.name}" for path in PACKAGE.iterdir()
                  if path.is_dir() and (path / "__init__.py").is_file()}
    unplaced = sorted(name for name in top_level if owner(name)[1] == "harness")
    assert not unplaced, f"not in any layer of LAYERS (add them to the table and docs/architecture.md): {unplaced}"


def test_the_reader_sees_the_imports() -> None:
    """The checks above read something: a known import, including one inside a function, and a resolved submodule."""
    seen = {(imp.importer, imp.target) for imp in HARNESS_IMPORTS}
    assert ("harness.cli", "harness.gate.diff") in seen
    assert ("harness.report", "harness.report.html") in seen  # imported inside a function
    assert ("harness.plugin", "harness.plugin.workers") in seen  # `from harness.plugin import workers`
    assert ("harness.gate.quality", "harness.toggles") in seen  # `from harness import toggles as ...`


def test_an_upward_import_is_caught() -> None:
    """The rule itself: a store module importing the report layer fails, one importing records does not."""
    up = Import("harness/store/x.py", 3, "from harness.report import tables", "harness.store.x", "harness.report.tables")
    down = Import("harness/store/x.py", 4, "from harness.records import Speed", "harness.store.x", "harness.records")
    store = owner("harness.store.x")[0]
    assert upward([up, down], store) == [
        "harness/store/x.py:3: 'from harness.report import tables': harness.store.x (layer 3 (harness.store)) may not "
        "import harness.report.tables (layer 2 (harness.report), a higher layer)"]
    assert owner("harness.models.embedded.tokenizer") == (6, "harness.models")
    assert owner("harness.plugin.case")[0] == owner("harness.cli")[0] == 0  # plugin and cli share the top layer

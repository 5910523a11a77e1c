"""The package's floors: every import points down (or stays on its floor), and docs/design.md's map says so.

The map is the fenced block under "## Floors" in docs/design.md, one line per floor, top floor first::

    name   entries (a file `x.py`, or a folder `x/` for every file under it)   → floors it imports

Lines starting with ``#`` are comments. The ground (``__init__.py``, ``io.py``, ...) holds helpers
that import nothing of zhyper; every floor may use them, so no arrow to the ground is drawn.

A file may import its own floor and the floors below it, never one above (that would be a circle
between floors). The walk reads every ``import zhyper.x`` / ``from zhyper.x import y`` / relative
import, at module level or inside a function, with ``ast`` (nothing is imported).

Two more walks: no two files of the package import each other, directly or round a longer circle, even on
one floor (each name has one home, the imports go one way); and no file outside ``tests/`` imports
``tests`` (benchmarks and tools run from an installed package: their shared builders are ``zhyper.testing``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "zhyper"
DESIGN = REPO / "docs" / "design.md"
ARROW = "→"


@dataclass(frozen=True)
class Floor:
    name: str
    level: int  # 0 is the ground
    entries: tuple[str, ...]  # "io.py", "layers/"
    imports: frozenset[str]  # the floors below it that the map says it imports


@dataclass(frozen=True)
class Edge:
    source: str  # file relative to the package, "hyper/encoder.py"
    line: int
    target: str  # file relative to the package, "data/base.py"
    module: str  # as written, resolved: "zhyper.data.base"


def parse_map(text: str) -> list[Floor]:
    """The floors of the map under '## Floors' (top first in the text), returned ground first."""
    section = re.search(r"^## Floors\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not section:
        raise AssertionError("docs/design.md: no '## Floors' section with the map of the package")
    block = re.search(r"^```\n(.*?)^```", section.group(1), re.S | re.M)
    if not block:
        raise AssertionError("docs/design.md '## Floors': no fenced block holding the map")
    rows = []
    for raw in block.group(1).splitlines():
        if not raw.strip() or raw.strip() in {"↓", "|"} or raw.lstrip().startswith("#"):
            continue
        left, _, right = raw.partition(ARROW)
        name, *entries = left.split()
        if not entries:
            raise AssertionError(f"docs/design.md map line {raw!r}: expected 'name entries... {ARROW} floors'")
        rows.append((name, tuple(entries), frozenset(right.split())))
    n = len(rows)
    return [Floor(name, n - 1 - i, entries, imports) for i, (name, entries, imports) in enumerate(rows)][::-1]


def floor_of(path: str, floors: list[Floor]) -> Floor | None:
    """The floor whose entry matches ``path`` (a file relative to the package); the longest entry wins."""
    best = None
    for floor in floors:
        for entry in floor.entries:
            if path == entry or (entry.endswith("/") and path.startswith(entry)):
                if best is None or len(entry) > len(best[1]):
                    best = (floor, entry)
    return best[0] if best else None


def module_file(module: str, root: Path) -> str | None:
    """``zhyper.a.b`` -> "a/b.py" or "a/b/__init__.py" when it exists under ``root``."""
    parts = module.split(".")[1:]
    candidates = [Path(*parts, "__init__.py")] + ([Path(*parts[:-1], parts[-1] + ".py")] if parts else [])
    for candidate in candidates:
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def _package_of(rel: str) -> str:
    """The package a relative import in file ``rel`` starts from: "hyper/encoder.py" -> "zhyper.hyper"."""
    parts = ["zhyper", *Path(rel).with_suffix("").parts]
    return ".".join(parts[:-1])


def _imported(node: ast.AST, package: str, root: Path) -> list[tuple[str, str]]:
    """(module, file) for each zhyper file an import node loads; ``from pkg import sub`` loads pkg/sub.py."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        names = [f"{module}.{a.name}" if module_file(f"{module}.{a.name}", root) else module for a in node.names]
    else:
        return []
    found = [(m, module_file(m, root)) for m in names if m.split(".")[0] == "zhyper"]
    return list(dict.fromkeys((m, f) for m, f in found if f))


def import_edges(root: Path) -> list[Edge]:
    """Every import of a zhyper module by a file under ``root`` (the package folder), with its line."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            edges += [Edge(rel, node.lineno, target, module)
                      for module, target in _imported(node, _package_of(rel), root) if target != rel]
    return edges


def violations(edges: list[Edge], floors: list[Floor], files: list[str]) -> list[str]:
    """Upward imports, files on no floor, map entries that match nothing, arrows the map does not show."""
    problems = [f"zhyper/{f}: on no floor of the map in docs/design.md ('## Floors'); add it to one"
                for f in files if floor_of(f, floors) is None]
    problems += [f"docs/design.md map: entry {e!r} of floor {fl.name!r} matches no file under zhyper/"
                 for fl in floors for e in fl.entries if not any(f == e or f.startswith(e) for f in files)]
    seen: dict[str, set[str]] = {fl.name: set() for fl in floors}
    for edge in edges:
        src, dst = floor_of(edge.source, floors), floor_of(edge.target, floors)
        if src is None or dst is None:
            continue
        if dst.level > src.level:
            problems.append(f"zhyper/{edge.source}:{edge.line}: imports {edge.module} (floor {dst.name!r}) from "
                            f"floor {src.name!r}: an upward import (a circle between floors); move the shared "
                            f"code down or the import up")
        elif dst is not src and dst.level > 0:  # the ground's helpers are for every floor: no arrow drawn
            seen[src.name].add(dst.name)
    for fl in floors:
        if seen[fl.name] != set(fl.imports):
            problems.append(f"docs/design.md map: floor {fl.name!r} imports {sorted(seen[fl.name])} but the map "
                            f"says {ARROW} {sorted(fl.imports)}; update the map (or the imports)")
    return problems


def package_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))


def test_every_import_points_down_and_the_map_matches():
    floors = parse_map(DESIGN.read_text(encoding="utf-8"))
    problems = violations(import_edges(PACKAGE), floors, package_files(PACKAGE))
    assert not problems, "\n".join(problems)


def test_map_is_ordered_ground_first_and_names_its_floors_once():
    floors = parse_map(DESIGN.read_text(encoding="utf-8"))
    names = [fl.name for fl in floors]
    assert names[0] == "ground" and names[1:3] == ["layers", "hyper"] and len(set(names)) == len(names)
    assert floors[1].imports == set(), "layers import nothing of zhyper but the ground's helpers"
    assert floors[2].imports <= {"layers"}, "hyper imports only layers (and the ground's helpers)"


@pytest.fixture
def small_package(tmp_path):
    """A package with layers/ below hyper/: a twin of the real one to break on purpose."""
    root = tmp_path / "zhyper"
    for rel, text in {"__init__.py": "", "layers/__init__.py": "", "layers/zlinear.py": "import math\n",
                      "hyper/__init__.py": "", "hyper/net.py": "from zhyper.layers.zlinear import math\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    design = ("## Floors\n\n```\nhyper   hyper/   → layers\n  ↓\nlayers  layers/\n  ↓\n"
              "ground  __init__.py\n```\n")
    return root, parse_map(design)


def test_twin_the_small_package_passes(small_package):
    root, floors = small_package
    assert violations(import_edges(root), floors, package_files(root)) == []


def test_twin_an_upward_import_fails_naming_file_and_line(small_package):
    root, floors = small_package
    (root / "layers" / "zlinear.py").write_text("import math\n\n\ndef late():\n    from zhyper.hyper import net\n")
    problems = violations(import_edges(root), floors, package_files(root))
    assert any(p.startswith("zhyper/layers/zlinear.py:5: imports zhyper.hyper.net (floor 'hyper') from floor "
                            "'layers': an upward import") for p in problems), problems


def test_twin_a_file_off_the_map_a_stale_entry_and_a_missing_arrow_fail(small_package):
    root, _ = small_package
    (root / "tools.py").write_text("import zhyper\n")
    floors = parse_map("## Floors\n\n```\n# top first\nhyper   hyper/ gone.py\nlayers  layers/\nground  __init__.py\n```\n")
    problems = violations(import_edges(root), floors, package_files(root))
    assert problems == [
        "zhyper/tools.py: on no floor of the map in docs/design.md ('## Floors'); add it to one",
        "docs/design.md map: entry 'gone.py' of floor 'hyper' matches no file under zhyper/",
        "docs/design.md map: floor 'hyper' imports ['layers'] but the map says → []; update the map (or the imports)",
    ]


# ------------------------------------------------------------------------------------- long functions
MAX_FUNCTION_LINES = 60
SCANNED = ("zhyper", "launch", "tools", "benchmarks")  # everything but tests/
# Over the limit in files being changed by others right now; to split there. A stale entry (split, renamed or
# gone) fails too, so the list only shrinks.
LONG_FUNCTIONS_ALLOWED: set[str] = set()


def long_functions(root: Path, folders=SCANNED, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """{"path:function": lines} of every function (methods and nested ones too) longer than ``limit`` lines."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > limit:
                        found[f"{path.relative_to(root).as_posix()}:{node.name}"] = n
    return found


def long_function_problems(found: dict[str, int], allowed: set[str]) -> list[str]:
    return ([f"{name}:{n} lines (> {MAX_FUNCTION_LINES}): split it" for name, n in sorted(found.items())
             if name not in allowed]
            + [f"{name}: allowed as long but no longer is: remove it from LONG_FUNCTIONS_ALLOWED"
               for name in sorted(allowed - set(found))])


def test_no_function_over_60_lines():
    assert long_function_problems(long_functions(REPO), LONG_FUNCTIONS_ALLOWED) == []


def test_twin_a_long_function_is_named_with_its_length(tmp_path):
    pkg = tmp_path / "zhyper"
    pkg.mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(60))
    (pkg / "a.py").write_text(f"def short():\n    return 1\n\n\nclass C:\n    def long(self):\n{body}\n")
    found = long_functions(tmp_path, folders=("zhyper",))
    assert found == {"zhyper/a.py:long": 61}
    assert long_function_problems(found, set()) == ["zhyper/a.py:long:61 lines (> 60): split it"]
    assert long_function_problems(found, {"zhyper/a.py:long"}) == []
    assert long_function_problems({}, {"zhyper/a.py:long"}) == [
        "zhyper/a.py:long: allowed as long but no longer is: remove it from LONG_FUNCTIONS_ALLOWED"]


# ------------------------------------------------------------------------------------- import circles
def import_circles(edges: list[Edge]) -> list[str]:
    """One line per group of files that import one another round a circle (the strongly connected groups of
    the file graph, module-level and function-level imports alike), naming each import that closes it."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    problems = []
    for group in sorted(groups):
        closing = [f"zhyper/{e.source}:{e.line} imports {e.module}"
                   for e in sorted(edges, key=lambda e: (e.source, e.line)) if e.source in group and e.target in group]
        problems.append(f"import circle between {', '.join('zhyper/' + f for f in group)}: {'; '.join(closing)}; "
                        "give each name one home so the imports go one way")
    return problems


def test_no_import_circle_between_files_of_the_package():
    problems = import_circles(import_edges(PACKAGE))
    assert not problems, "\n".join(problems)


def test_twin_a_circle_on_one_floor_fails_naming_both_imports(small_package):
    root, _ = small_package
    assert import_circles(import_edges(root)) == []
    (root / "hyper" / "other.py").write_text("from zhyper.hyper import net\n")
    (root / "hyper" / "net.py").write_text("from zhyper.layers.zlinear import math\n\n\ndef late():\n"
                                           "    from zhyper.hyper.other import net\n")
    assert import_circles(import_edges(root)) == [
        "import circle between zhyper/hyper/net.py, zhyper/hyper/other.py: zhyper/hyper/net.py:5 imports "
        "zhyper.hyper.other; zhyper/hyper/other.py:1 imports zhyper.hyper.net; give each name one home so the "
        "imports go one way"]


def test_twin_a_longer_circle_fails_too(small_package):
    root, _ = small_package
    for name, nxt in (("a", "b"), ("b", "c"), ("c", "a")):
        (root / "hyper" / f"{name}.py").write_text(f"def late():\n    from zhyper.hyper import {nxt}\n")
    problems = import_circles(import_edges(root))
    assert len(problems) == 1 and problems[0].startswith(
        "import circle between zhyper/hyper/a.py, zhyper/hyper/b.py, zhyper/hyper/c.py: "), problems


# ------------------------------------------------------------------------------- nothing imports tests/
def imports_of_tests(root: Path, folders=SCANNED) -> list[str]:
    """"path:line: imports tests..." for every ``import tests...`` / ``from tests... import`` (module level or
    inside a function) in a file under ``folders``: they must run from an installed package, without tests/."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                found += [f"{path.relative_to(root).as_posix()}:{node.lineno}: imports {name}: move what it needs "
                          "into zhyper/testing.py" for name in names if name.split(".")[0] == "tests"]
    return found


def test_no_benchmark_tool_or_package_file_imports_tests():
    assert imports_of_tests(REPO) == []


def test_twin_an_import_of_tests_is_named_with_its_line(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "tools" / "probe.py").write_text("import testsuite\nfrom zhyper.testing import tiny_llama\n")
    assert imports_of_tests(tmp_path, folders=("tools", "benchmarks")) == []
    (tmp_path / "benchmarks" / "bench.py").write_text(
        "import os\n\n\ndef build():\n    from tests.model_helpers import perturb\n    import tests.conftest\n")
    assert imports_of_tests(tmp_path, folders=("tools", "benchmarks")) == [
        "benchmarks/bench.py:5: imports tests.model_helpers: move what it needs into zhyper/testing.py",
        "benchmarks/bench.py:6: imports tests.conftest: move what it needs into zhyper/testing.py"]

"""The package's shape, checked so it cannot drift (issue #14).

- No module over MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES lines, except
  the files and functions listed below, which are not split yet. The lists only shrink: a
  listed entry may not grow past the size recorded here, and one that fits the limit again
  must leave the list (the test says so).
- vlmctl's import graph (every `import`, also those inside functions, read with `ast`; not
  `if TYPE_CHECKING:` blocks) has no cycle.
- No verb package imports another verb package, and no shared module imports a verb: what
  several verbs need lives in a shared module (the runtime assembly, the run folder, ...).
- docs/DESIGN.md's module map lists every module that exists, and only those.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vlmctl"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# Modules not split yet: path -> the most lines it may have (its size when listed).
LONG_MODULES: dict[str, int] = {}

# Functions not split yet: "path::qualname" -> the most lines it may have.
LONG_FUNCTIONS: dict[str, int] = {}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def test_no_module_over_the_limit_except_those_listed():
    problems = []
    sizes = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules().values()}
    for rel, n in sorted(sizes.items()):
        cap = LONG_MODULES.get(rel)
        if cap is None and n > MAX_MODULE_LINES:
            problems.append(f"{rel}: {n} lines > {MAX_MODULE_LINES}: split it by concern")
        elif cap is not None and n > cap:
            problems.append(f"{rel}: {n} lines, grew past its allowance {cap}: split it")
        elif cap is not None and n <= MAX_MODULE_LINES:
            problems.append(f"{rel}: {n} lines now fits: remove it from LONG_MODULES")
    problems += [
        f"{rel}: in LONG_MODULES but does not exist" for rel in set(LONG_MODULES) - set(sizes)
    ]
    assert not problems, "\n".join(problems)


def test_no_function_over_the_limit_except_those_listed():
    problems = []
    seen = set()
    for path in _modules().values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for qualname, node in _functions(tree):
            key = f"{_rel(path)}::{qualname}"
            n = node.end_lineno - node.lineno + 1
            cap = LONG_FUNCTIONS.get(key)
            seen.add(key)
            if cap is None and n > MAX_FUNCTION_LINES:
                problems.append(f"{key}: {n} lines > {MAX_FUNCTION_LINES}: split it")
            elif cap is not None and n > cap:
                problems.append(f"{key}: {n} lines, grew past its allowance {cap}")
            elif cap is not None and n <= MAX_FUNCTION_LINES:
                problems.append(f"{key}: {n} lines now fits: remove it from LONG_FUNCTIONS")
    problems += [f"{key}: in LONG_FUNCTIONS but not found" for key in set(LONG_FUNCTIONS) - seen]
    assert not problems, "\n".join(problems)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST):
    """Every import node, at any depth, except inside `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def import_graph() -> dict[str, set[str]]:
    """vlmctl module -> the vlmctl modules it imports (a name imported from a package resolves
    to the submodule when there is one of that name, else to the package)."""
    modules = _modules()

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names if a.name.split(".")[0] == "vlmctl"}
                continue
            base = node.module or ""
            if node.level:
                anchor = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            if base.split(".")[0] != "vlmctl":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                deps.add(full if full in modules else known(base))
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    """The check above can fail: a two-module loop and a lazy import inside a function count."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    import vlmctl.x\nif TYPE_CHECKING:\n    import vlmctl.y\n")
    assert [n.names[0].name for n in _imports(tree)] == ["vlmctl.x"]


# Each verb's own code. A verb package may import shared modules and itself, never another verb.
VERB_PACKAGES = (
    "vlmctl.validation",  # validate's dataset pass (the config checks are shared: vlmctl.config)
    "vlmctl.preview",
    "vlmctl.training",
    "vlmctl.merge",
    "vlmctl.evaluation",
    "vlmctl.demo",
)
# The entry layer: turns flags into calls of the verbs (it may import every verb).
ENTRY = ("vlmctl.cli", "vlmctl.__main__", "vlmctl.commands")
# Everything else is shared and imports no verb, named here so a new top-level module or
# package is a decision (the test fails until it is listed in one of the three groups).
SHARED = (
    "vlmctl",
    "vlmctl.checks",
    "vlmctl.collate",
    "vlmctl.config",
    "vlmctl.credentials",
    "vlmctl.data",
    "vlmctl.errors",
    "vlmctl.extras",
    "vlmctl.generation",
    "vlmctl.media",
    "vlmctl.metrics",
    "vlmctl.models",
    "vlmctl.packing",
    "vlmctl.packing_checks",
    "vlmctl.precommit",
    "vlmctl.proc",
    "vlmctl.quiet",
    "vlmctl.report",
    "vlmctl.run_folder",
    "vlmctl.runtime",
    "vlmctl.testing",
)


def _group(module: str, groups: tuple[str, ...]) -> str | None:
    """The entry of `groups` that `module` is (or lies inside), else None."""
    return next((g for g in groups if module == g or module.startswith(g + ".")), None)


def layer_problems(graph: dict[str, set[str]]) -> list[str]:
    """Imports that cross from one verb into another, or from shared code into a verb."""
    problems = []
    for name, deps in sorted(graph.items()):
        if name == "vlmctl":
            home = "vlmctl"
        else:
            home = _group(name, VERB_PACKAGES) or _group(name, ENTRY) or _group(name, SHARED[1:])
        if home is None:
            problems.append(f"{name}: not in VERB_PACKAGES, ENTRY or SHARED: decide which")
            continue
        if home in ENTRY:
            continue
        for dep in sorted(deps):
            verb = _group(dep, VERB_PACKAGES)
            if verb is not None and verb != home:
                what = "verb" if home in VERB_PACKAGES else "shared module"
                problems.append(
                    f"{name} ({what}) imports {dep} (verb {verb}): move what both need into a "
                    "shared module"
                )
    return problems


def test_no_verb_imports_another_verb_and_shared_code_imports_none():
    problems = layer_problems(import_graph())
    assert not problems, "\n".join(problems)


def test_the_layer_check_finds_a_crossing():
    """The check above can fail: verb -> verb and shared -> verb are found, verb -> shared and
    entry -> verb are not, and an unplaced module is named."""
    graph = {
        "vlmctl.merge.plan": {"vlmctl.training.worker", "vlmctl.runtime"},
        "vlmctl.runtime": {"vlmctl.preview"},
        "vlmctl.commands.train": {"vlmctl.training.parent"},
        "vlmctl.training.worker": {"vlmctl.training.launch", "vlmctl.run_folder.manifest"},
        "vlmctl.newthing": set(),
    }
    found = layer_problems(graph)
    assert len(found) == 3
    assert found[0].startswith("vlmctl.merge.plan (verb) imports vlmctl.training.worker")
    assert found[1].startswith("vlmctl.newthing: not in")
    assert found[2].startswith("vlmctl.runtime (shared module) imports vlmctl.preview")


MAP_LINE = re.compile(r"^(vlmctl/\S+\.py)\s")


def design_map() -> list[str]:
    """The module paths docs/DESIGN.md's layout block names, in its order."""
    text = (REPO / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return [m.group(1) for line in block.splitlines() if (m := MAP_LINE.match(line + " "))]


def test_design_module_map_matches_the_tree():
    listed = design_map()
    real = {_rel(p) for p in _modules().values()}
    assert len(listed) == len(set(listed)), "DESIGN.md lists a module twice"
    missing = sorted(real - set(listed))
    stale = sorted(set(listed) - real)
    assert not missing and not stale, (
        f"docs/DESIGN.md's layout: add {missing}; remove (no such module) {stale}"
    )

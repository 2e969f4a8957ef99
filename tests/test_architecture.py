"""The code reads in one direction: no import cycle (function-level imports counted), short functions, and a
README whose layout, defaults and record schema match the code."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """bench module -> bench modules it imports anywhere in its body (inside functions too)."""
    modules = {module_name(p): p for p in BENCH.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:  # relative import
                    pkg = name.split(".")[: -node.level] if not path.name == "__init__.py" else name.split(".")
                    base = ".".join([*pkg, node.module])
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_bench():
    graph = import_graph()
    assert len(graph) > 30
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_function_over_sixty_lines():
    long = []
    for path in BENCH.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_layout_names_every_module_and_nothing_else():
    text = readme()
    section = text[text.index("## Code layout") :]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    named = {w.strip("`,.();:") for w in section.split() if w.strip("`,.();:").startswith("bench/")}
    on_disk = {str(p.relative_to(ROOT)) for p in BENCH.rglob("*.py") if p.name != "__main__.py"}
    on_disk = {p[: -len("/__init__.py")] + "/" if p.endswith("/__init__.py") else p for p in on_disk}
    assert on_disk - named == set(), f"modules missing from the README layout: {sorted(on_disk - named)}"
    assert named - on_disk == set(), f"README layout names what does not exist: {sorted(named - on_disk)}"


def test_readme_schema_and_defaults_are_generated_from_the_code():
    from bench import registry
    from bench.results.record import schema_markdown
    from bench.suite.defaults import markdown_table

    assert schema_markdown(registry.metric_specs()) in readme(), (
        "README schema is stale: paste `peft-bench list schema`"
    )
    assert markdown_table() in readme(), "README defaults table is stale: paste bench.defaults.markdown_table()"


def test_fakes_live_in_tests():
    for path in BENCH.rglob("*.py"):  # torch's FakeTensor (shapes without data) is not a test fake
        assert "Fake" not in path.read_text().replace("FakeTensor", ""), f"{path}: test fakes belong in tests/fakes"


# The layer table: which part of bench/ may import which (its own package always). A package's parts are the
# stages of the README's flow; `core` is bench/__init__, errors and options.
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "env": {"core"},
    "results": {"core"},
    "scoring": {"core"},
    "trackers": {"core"},
    "models": {"core", "env"},
    "methods": {"core", "results", "models", "tasks"},
    "tasks": {"core", "results", "models", "scoring"},
    "registry": {"core", "results", "methods", "tasks"},
    "suite": {"core", "registry", "models", "methods", "tasks", "scoring"},
    "plan": {"core", "env", "registry", "models", "methods", "tasks", "suite"},
    "cell": {
        "core",
        "env",
        "results",
        "trackers",
        "scoring",
        "models",
        "methods",
        "tasks",
        "registry",
        "suite",
        "plan",
    },
    "execution": {"core", "env", "results", "trackers", "suite", "plan", "cell"},
    "report": {"core", "results"},
    "runner": {"core", "results", "suite", "execution"},
    "selfcheck": {"core", "results", "trackers", "models", "suite", "execution", "runner"},
    "fit": {"core", "results", "suite", "plan", "runner"},
    "cli": {
        "core",
        "env",
        "results",
        "trackers",
        "models",
        "registry",
        "suite",
        "plan",
        "execution",
        "report",
        "runner",
        "selfcheck",
        "fit",
    },
}
CORE = {"bench", "bench.errors", "bench.options"}


def layer_of(module: str) -> str:
    if module in CORE:
        return "core"
    return module.split(".")[1]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, edges in sorted(graph.items()):
        own = layer_of(module)
        for target in sorted(edges):
            other = layer_of(target)
            if other != own and other not in LAYERS[own]:
                out.append(f"{module} imports {target}: {own} may import {sorted(LAYERS[own]) or 'nothing'}")
    return out


def test_every_module_belongs_to_a_layer_of_the_table():
    assert {layer_of(m) for m in import_graph()} == set(LAYERS)


def test_imports_follow_the_layer_table():
    assert layer_violations(import_graph()) == []


def test_the_layer_check_fails_on_planted_upward_imports():
    graph = import_graph()
    planted = {**graph, "bench.report.frame": {*graph["bench.report.frame"], "bench.execution.local"}}
    planted["bench.methods.distill"] = {*graph["bench.methods.distill"], "bench.cell.measure"}
    found = layer_violations(planted)
    assert any("bench.report.frame imports bench.execution.local" in v for v in found)
    assert any("bench.methods.distill imports bench.cell.measure" in v for v in found)


def test_bench_top_level_holds_only_the_entry_points():
    top = sorted(p.name for p in BENCH.glob("*.py"))
    assert len(top) <= 6, top

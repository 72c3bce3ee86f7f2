"""The package's shape, read from its source with ast (nothing imported): no import cycle among
bench's modules (imports at the top and inside functions; left out: those under `if TYPE_CHECKING:`,
which never run, and under `if __name__ == "__main__":`, which run only when the file is the program,
`python -m bench.train`, not the module others import), each import within its own package or down
the layers, MLflow imported only under bench/tracking/, no module over 400 lines and no class over 200."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(BENCH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(BENCH.rglob("*.py"))}


SKIPPED = ("TYPE_CHECKING", "typing.TYPE_CHECKING", "__name__ == '__main__'")


def _skipped(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in SKIPPED


def _imports(node: ast.AST):
    """Every import under `node`, at any depth, but those in SKIPPED blocks (their else runs)."""
    for child in ast.iter_child_nodes(node):
        for node in child.orelse if _skipped(child) else [child]:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node
            yield from _imports(node)


def _owner(name: str) -> str | None:
    """The bench module that importing `name` runs: itself, or the nearest package above it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imported(module: str) -> set[str]:
    """The bench modules that `module` imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        found |= {owner for owner in map(_owner, names) if owner is not None and owner != module}
    return found


def graph() -> dict[str, set[str]]:
    return {module: imported(module) for module in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_bench_modules():
    edges = graph()
    assert edges["bench.engine.train"] >= {
        "bench.data.preprocessing",
        "bench.engine.transfer",
    }  # the graph sees imports
    assert "bench.engine.train" in edges["bench.engine.serving"]
    assert cycles(edges) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# bench's units (its packages and top-level modules), lowest first: a module imports from its own unit or
# from a lower layer, never from its own layer or a higher one (so a command never imports another command).
# errors sits under the rest of the foundation, which raises its BenchError.
LAYERS = [
    {"errors"},
    {"ranges", "device", "provenance", "store_files", "progress", "out_folder", "speed_ratio"},
    {"models"},
    {"config"},
    {"data"},
    {"engine"},
    {"tracking"},
    {"run"},
    {"report"},
    {"cli"},
    {"ablation", "train", "predict", "search", "post", "benchmark", "kit"},  # the commands
]


def unit(module: str) -> str:
    """A module's first component under bench: bench.run.runner -> 'run', bench.cli -> 'cli'."""
    return module.split(".")[1] if "." in module else module


def layering_violations(edges: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    """Each import between two units that does not go to a strictly lower layer, or touches a unit in none."""
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    found = []
    for module, imports in sorted(edges.items()):
        for target in sorted(imports):
            here, there = unit(module), unit(target)
            if here == there:
                continue
            if here not in level or there not in level:
                missing = here if here not in level else there
                found.append(f"{module} -> {target}: {missing} is in no layer")
            elif level[there] >= level[here]:
                found.append(f"{module} -> {target}: {there} is not below {here}")
    return found


def test_every_import_between_units_goes_down_the_layers():
    edges = graph()
    assert "bench.run.budget_estimates" in edges["bench.cli"]  # the graph sees the edges checked here
    assert {unit(m) for m in MODULES if m != "bench"} <= set().union(*LAYERS), "a unit in no layer"
    assert layering_violations(edges, LAYERS) == []


def test_the_layer_check_finds_an_upward_import_and_a_unit_in_no_layer():
    edges = {
        "bench.cli": {"bench.benchmark.budgets", "bench.run.studies", "bench.cli"},
        "bench.run.runner": {"bench.run.studies", "bench.engine.train"},
        "bench.benchmark.gpu": {"bench.kit.build", "bench.elsewhere"},
    }
    assert layering_violations(edges, LAYERS) == [
        "bench.benchmark.gpu -> bench.elsewhere: elsewhere is in no layer",
        "bench.benchmark.gpu -> bench.kit.build: kit is not below benchmark",
        "bench.cli -> bench.benchmark.budgets: benchmark is not below cli",
    ]


def test_mlflow_is_imported_only_under_bench_tracking():
    outside = []
    for module, path in MODULES.items():
        if module == "bench.tracking" or module.startswith("bench.tracking."):
            continue
        for node in _imports(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            outside += [f"{module}: {name}" for name in names if name.split(".")[0] == "mlflow"]
    assert outside == []


def test_no_bench_module_is_over_400_lines():
    lines = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    assert {module: n for module, n in lines.items() if n > MAX_LINES} == {}


MAX_CLASS_LINES = 200


def class_sizes() -> dict[str, int]:
    """Each bench class's lines, less its field declarations (from its first annotated field to its last,
    the comments between them included): a config declares what it holds, which is not what it does."""
    sizes = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                declared = [b for b in node.body if isinstance(b, ast.AnnAssign)]
                fields = declared[-1].end_lineno - declared[0].lineno + 1 if declared else 0
                sizes[f"{module}.{node.name}"] = node.end_lineno - node.lineno + 1 - fields
    return sizes


def test_no_bench_class_is_over_200_lines_its_field_declarations_aside():
    sizes = class_sizes()
    assert sizes["bench.config.RunConfig"] > 0 and len(sizes) > 50  # the count sees the classes
    assert {name: n for name, n in sizes.items() if n > MAX_CLASS_LINES} == {}

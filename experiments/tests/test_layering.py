"""The layers import one way: the library packages pull in none of the orchestration stack, ``base`` none of
the other layers, the run layer neither tracking nor reporting, reporting never the trainer; and no module
imports itself back through another, not even from inside a function. Each import runs in a fresh
interpreter."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import experiments

ORCHESTRATION = ("hydra", "omegaconf", "ray", "mlflow", "experiments")


def imported_after(statement: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after ``statement``."""
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def imported_modules(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())


def modules_of(package: str) -> list[str]:
    """Every module of a subpackage of ``experiments``, found on disk (a new module is covered unasked)."""
    folder = Path(experiments.__file__).parent / package.removeprefix("experiments.").replace(".", "/")
    found = sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)]) if m.name != "__main__")
    assert found, f"no modules under {folder}"
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports anywhere in its file, at the top or inside a function
    (``from a.b import c`` counts as importing ``a.b`` and, when it is one, the module ``a.b.c``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if "tests" in parts:
            continue
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        named = set()
        for node in runtime_nodes([ast.parse(path.read_text(), str(path))]):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                named |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in named if m in modules and m != name and m != package}
    return graph


def runtime_nodes(nodes):
    """``nodes`` and everything under them but what is under ``if TYPE_CHECKING:`` (imports for annotations,
    never run)."""
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from runtime_nodes(node.orelse)
            continue
        yield node
        yield from runtime_nodes(ast.iter_child_nodes(node))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_local_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("import pkg.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n")
    (package / "e.py").write_text("import pkg.d\n")
    assert cycles(import_graph(package, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]


@pytest.mark.parametrize("package", ["experiments", "projectable", "projectable_data", "projectable_vqvae"])
def test_no_import_cycles(package):
    root = Path(__import__(package).__file__).parent
    graph = import_graph(root, package)
    assert len(graph) > 3, sorted(graph)
    assert cycles(graph) == []


def test_base_imports_no_other_layer():
    modules = imported_modules("import " + ", ".join(modules_of("experiments.base")))
    assert {m for m in modules if m.startswith("experiments.")} == {"experiments.base", *modules_of("experiments.base")}
    assert not {m.split(".")[0] for m in modules} & {"hydra", "mlflow", "ray", "torch"}


@pytest.mark.parametrize("package", ["projectable", "projectable_data", "projectable_vqvae"])
def test_library_packages_import_no_orchestration(package):
    modules = imported_after(f"import {package}")
    assert package in modules
    assert not modules & set(ORCHESTRATION), sorted(modules & set(ORCHESTRATION))


def test_run_layer_imports_neither_tracking_nor_reporting():
    modules = imported_modules("import " + ", ".join(modules_of("experiments.run")))
    assert not {m for m in modules if m.startswith(("experiments.tracking", "experiments.reporting",
                                                    "experiments.orchestration", "experiments.train"))}
    assert not {m.split(".")[0] for m in modules} & {"mlflow", "ray"}


def test_reporting_reads_tracking_never_the_trainer():
    reporting = modules_of("experiments.reporting")
    assert {"experiments.reporting.ablations", "experiments.reporting.split_study"} <= set(reporting)
    modules = imported_modules("import " + ", ".join(reporting))
    assert set(reporting) <= modules
    assert "experiments.tracking.sweeps" in modules
    assert not {m for m in modules if m.startswith(("experiments.train", "experiments.orchestration",
                                                    "experiments.sweep"))}
    assert "ray" not in {m.split(".")[0] for m in modules}


def test_importing_the_toolkit_sets_no_environment():
    code = ("import os; before = dict(os.environ); import experiments.reporting.toolkit, experiments.config, "
            "experiments.tracking.store; print(sorted(set(os.environ.items()) - set(before.items())))")
    # telemetry stays off in the child (importing MLflow would start its client otherwise); the one variable
    # left unset is the one ``experiments.telemetry.apply`` would add, so a module that applied it at import
    # would show up
    env = {k: v for k, v in os.environ.items() if k != "RAY_CHDIR_TO_TRIAL_DIR"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout
    assert out.strip() == "[]"


def test_at_most_eight_modules_at_the_top_of_experiments():
    top = sorted(p.name for p in Path(experiments.__file__).parent.glob("*.py"))
    assert len(top) <= 8, top

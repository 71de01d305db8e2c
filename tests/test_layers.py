"""The layers import only downward, and no module imports itself back through another.

Every module of the package is declared here with its layer. The test reads every
``import`` in the source (function-level ones and ``TYPE_CHECKING`` ones included)
and fails on a module that is not declared, a declared module that no longer
exists, an import from a higher layer (or from a sibling layer of the same rank:
``trainer`` and ``export`` do not know each other), and any import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(pkg: str) -> str:
    """Source folder of an installed package: its package-dir entry, else its parent's folder + its name."""
    mapping: dict[str, str] = SETUPTOOLS["package-dir"]
    if pkg in mapping:
        return mapping[pkg]
    parent, _, last = pkg.rpartition(".")
    return f"{_folder(parent)}/{last}"


PACKAGE_DIR = {pkg: _folder(pkg) for pkg in SETUPTOOLS["packages"]}

# Bottom to top. A module may import from its own layer and from layers of a lower rank.
RANK = {"foundation": 0, "models": 1, "trainer": 2, "export": 2, "predict": 3, "infer": 4, "apps": 5, "benchmarks": 6}

LAYERS: dict[str, str] = {
    "liverseg": "foundation",
    "liverseg.core": "foundation",
    "liverseg.reference": "foundation",
    "liverseg.launch": "foundation",  # console scripts that import their command by name (liverseg/launch.py)
    "liverseg.core.batching": "foundation",
    "liverseg.core.charts": "foundation",
    "liverseg.core.choose": "foundation",
    "liverseg.core.cli": "foundation",
    "liverseg.core.contract": "foundation",
    "liverseg.core.ctcheck": "foundation",
    "liverseg.core.images": "foundation",
    "liverseg.core.dicom": "foundation",
    "liverseg.core.engine": "foundation",
    "liverseg.core.errors": "foundation",
    "liverseg.core.extras": "foundation",
    "liverseg.core.html": "foundation",
    "liverseg.core.intensity": "foundation",
    "liverseg.core.files": "foundation",
    "liverseg.core.metrics": "foundation",
    "liverseg.core.metrics3d": "foundation",
    "liverseg.core.overlay": "foundation",
    "liverseg.core.pages": "foundation",
    "liverseg.core.png": "foundation",
    "liverseg.core.preprocess": "foundation",
    "liverseg.core.resample": "foundation",
    "liverseg.core.volume": "foundation",
    "liverseg.models": "models",
    "liverseg.models.baseline": "models",
    "liverseg.models.checkpoint": "models",
    "liverseg.models.fused": "models",
    "liverseg.models.pipeline": "models",
    "liverseg.models.study": "models",
    "liverseg.models.unet": "models",
    "liverseg.checkpoint": "models",  # the stable public name of liverseg.models.checkpoint
    "liverseg.trainer": "trainer",
    "liverseg.trainer.__main__": "trainer",
    "liverseg.trainer.augment": "trainer",
    "liverseg.trainer.cli": "trainer",
    "liverseg.trainer.config": "trainer",
    "liverseg.trainer.curves": "trainer",
    "liverseg.trainer.distributed": "trainer",
    "liverseg.trainer.evaluate": "trainer",
    "liverseg.trainer.predict": "trainer",
    "liverseg.trainer.slices": "trainer",
    "liverseg.trainer.split": "trainer",
    "liverseg.trainer.study": "trainer",
    "liverseg.trainer.train": "trainer",
    "liverseg.export": "export",
    "liverseg.export.cli": "export",
    "liverseg.export.common": "export",
    "liverseg.export.onnx": "export",
    "liverseg.export.quantize": "export",
    "liverseg.export.torchscript": "export",
    "liverseg.export.verify": "export",
    "liverseg.predict": "predict",  # the predictor and where a model is opened: below the API and the command
    "liverseg.predict.anatomy": "predict",
    "liverseg.predict.cleanup": "predict",
    "liverseg.predict.model": "predict",
    "liverseg.predict.qc": "predict",
    "liverseg.predict.predictor": "predict",
    "liverseg.api": "predict",  # the Python API: a thin layer over the predictor, re-exported lazily by liverseg
    "liverseg.infer": "infer",
    "liverseg.infer.cli": "infer",
    "liverseg.infer.dicomweb": "infer",  # DICOMweb inputs and --store (QIDO/WADO/STOW-RS)
    "liverseg.infer.inputs": "infer",
    "liverseg.infer.merge": "infer",
    "liverseg.infer.outcome": "infer",
    "liverseg.infer.report": "infer",
    "liverseg.infer.resume": "infer",
    "liverseg.infer.rows": "infer",
    "liverseg.infer.runner": "infer",
    "liverseg.infer.schedule": "infer",
    "liverseg.infer.shard": "infer",
    "liverseg.infer.viewer": "infer",
    "liverseg.infer.volumes": "infer",
    "liverseg.apps": "apps",
    "liverseg.apps.demo": "apps",
    "liverseg.apps.dicom_synth": "apps",
    "liverseg.apps.eda": "apps",
    "liverseg.apps.figures": "apps",
    "liverseg.apps.synthetic": "apps",
    "liverseg.apps.quickstart": "apps",
    "liverseg.benchmarks": "benchmarks",
    "liverseg.benchmarks.__main__": "benchmarks",
    "liverseg.benchmarks.reference": "benchmarks",
    "liverseg.benchmarks.ab": "benchmarks",
    "liverseg.benchmarks.artifacts": "benchmarks",
    "liverseg.benchmarks.backends": "benchmarks",
    "liverseg.benchmarks.bench": "benchmarks",
    "liverseg.benchmarks.cli": "benchmarks",
    "liverseg.benchmarks.data": "benchmarks",
    "liverseg.benchmarks.e2e": "benchmarks",
    "liverseg.benchmarks.flops": "benchmarks",
    "liverseg.benchmarks.gpu": "benchmarks",
    "liverseg.benchmarks.hostile": "benchmarks",
    "liverseg.benchmarks.identical": "benchmarks",
    "liverseg.benchmarks.machine": "benchmarks",
    "liverseg.benchmarks.memprobe": "benchmarks",
    "liverseg.benchmarks.peak": "benchmarks",
    "liverseg.benchmarks.report": "benchmarks",
    "liverseg.benchmarks.report_viewer": "benchmarks",
    "liverseg.benchmarks.rounds": "benchmarks",
    "liverseg.benchmarks.scaling": "benchmarks",
    "liverseg.benchmarks.scans": "benchmarks",
    "liverseg.benchmarks.volume": "benchmarks",
}


def source_files() -> dict[str, Path]:
    """Installed module name -> source file, for every .py file under the package folders."""
    out: dict[str, Path] = {}
    for pkg, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for py in sorted(base.glob("*.py")):  # sub-folders are packages of their own in package-dir
            name = pkg if py.stem == "__init__" else f"{pkg}.{py.stem}"
            out[name] = py
    return out


MODULES = source_files()


def imports_of(name: str, path: Path) -> set[str]:
    """The liverseg modules ``name`` imports anywhere in its source (a package means its __init__)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.stem == "__init__"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        for t in targets:
            if t == "liverseg" or t.startswith("liverseg."):
                while t not in MODULES and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in MODULES and t != name:
                    found.add(t)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_every_module_is_declared_and_every_declared_module_exists():
    unmapped = sorted(set(MODULES) - set(LAYERS))
    gone = sorted(set(LAYERS) - set(MODULES))
    assert not unmapped, f"modules without a layer in tests/test_layers.py LAYERS: {unmapped}"
    assert not gone, f"LAYERS names modules that do not exist: {gone}"
    assert set(LAYERS.values()) <= set(RANK)


def test_imports_go_only_downward():
    bad = []
    for name, deps in GRAPH.items():
        mine = LAYERS[name]
        for dep in sorted(deps):
            theirs = LAYERS[dep]
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                bad.append(f"{name} ({mine}) imports {dep} ({theirs})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The parser above finds a function-level import (so the layering test can fail)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from liverseg.apps.demo import main\n    return main\n")
    assert imports_of("liverseg.core.fake", src) == {"liverseg.apps.demo"}


@pytest.mark.parametrize("pkg", sorted(PACKAGE_DIR))
def test_typecheck_tree_links_every_package(pkg):
    """mypy reads .typecheck/liverseg, one link per installed part; a new part needs its link."""
    tree = ROOT / ".typecheck"
    installed = tree / Path(*pkg.split("."))
    if pkg != "liverseg":  # the root is a real folder of links to its modules
        target = (ROOT / PACKAGE_DIR[pkg]).resolve()
        assert installed.resolve() == target, f"{installed} must link to {PACKAGE_DIR[pkg]}"
    for py in (ROOT / PACKAGE_DIR[pkg]).glob("*.py"):
        linked = installed / py.name
        assert linked.exists() and linked.resolve() == py.resolve(), f"{linked} must lead to {py} for mypy"

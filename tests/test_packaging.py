"""The wheel holds every module (the package-dir packaging trap).

The top-level folders (models/, trainer/, ...) install as ``liverseg.models``, ... through
setuptools ``package-dir``. A sub-folder missing from ``[tool.setuptools] packages``
still imports from the editable install but is silently left out of the wheel. This
test builds the wheel from a copy of the source, installs it into a fresh virtual
environment (dependencies come from this environment through a ``.pth`` path, the
editable install does not), and imports every module found in the source folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# the folder that holds each package's source, from pyproject's package-dir
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg")

pytestmark = pytest.mark.slow


def source_modules() -> list[str]:
    """Every importable module under the source folders, named as installed (liverseg.x.y)."""
    mods: set[str] = set()
    for pkg, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for py in base.rglob("*.py"):
            rel = py.relative_to(base)
            if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            # a nested folder of a listed package that is itself listed under its own name
            # (e.g. liverseg/x -> liverseg.x) is reached from both; the set keeps one
            mods.add(name)
    return sorted(mods)


def copy_source(dest: Path) -> None:
    """What the wheel is built from: the package folders and the project files (no build/ clutter)."""
    dest.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in sorted(set(PACKAGE_DIR.values())):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)


def run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("pkg"))


def build_wheel(work: Path) -> Path:
    """The wheel built from a copy of the source in ``work`` (tests/test_install.py uses it too)."""
    src = work / "src"
    copy_source(src)
    dist = work / "dist"
    # --no-isolation: build with this environment's setuptools (no network);
    # --skip-dependency-check: setuptools >= 70.1 builds wheels without the 'wheel' package
    run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(dist),
            str(src),
        ],
        cwd=work,
    )
    wheels = list(dist.glob("liverseg-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def clean_env(built_wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed (--no-deps); dependencies through a .pth path."""
    work = tmp_path_factory.mktemp("venv")
    env_dir = work / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    if not py.exists():  # pragma: no cover - Windows layout
        py = env_dir / "Scripts" / "python.exe"
    site = Path(
        run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).stdout.strip()
    )
    # this environment's site-packages as a plain path: its .pth files (the editable
    # install's finder among them) are NOT processed from a path added this way
    deps = sysconfig.get_paths()["purelib"]
    (site / "_liverseg_test_deps.pth").write_text(deps + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(built_wheel),
        ],
        cwd=work,
        env=env,
    )
    return {"python": py, "site": site, "env": env, "cwd": work}


def test_wheel_holds_only_the_liverseg_namespace(built_wheel):
    with zipfile.ZipFile(built_wheel) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names}
        dist_info = next(t for t in tops if t.endswith(".dist-info"))
        assert tops == {"liverseg", dist_info}, f"unexpected top-level entries: {sorted(tops)}"
        record_tops = {
            line.split(",")[0].split("/")[0] for line in z.read(f"{dist_info}/RECORD").decode().splitlines() if line
        }
        assert record_tops == {"liverseg", dist_info}
        if f"{dist_info}/top_level.txt" in names:
            assert z.read(f"{dist_info}/top_level.txt").decode().split() == ["liverseg"]
        in_wheel = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    # every source module is in the wheel under its installed name
    missing = [m for m in source_modules() if m not in in_wheel]
    assert not missing, (
        f"modules missing from the wheel (a sub-package not listed in pyproject [tool.setuptools] packages?): {missing}"
    )


def test_wheel_carries_code_only(built_wheel):
    """No benchmark results, READMEs or scripts in the wheel: modules, the typing marker and the reference model."""
    with zipfile.ZipFile(built_wheel) as z:
        payload = [n for n in z.namelist() if n.startswith("liverseg/") and not n.endswith("/")]
    assert not [n for n in payload if "/results/" in n], "benchmark results are in the wheel"
    # the package data: the reference model's files (model card, config, models) and the report viewer's script and
    # style, which report.html embeds
    viewer = {"liverseg/infer/viewer.js", "liverseg/infer/viewer.css"}
    other = sorted(
        n
        for n in payload
        if not n.endswith(".py")
        and n != "liverseg/py.typed"
        and not n.startswith("liverseg/reference/")
        and n not in viewer
    )
    assert not other, f"non-code files in the wheel: {other}"
    assert "liverseg/py.typed" in payload and viewer <= set(payload)


def test_wheel_ships_the_licence(built_wheel):
    """LICENSE (MIT) in the wheel's .dist-info/licenses, declared in the SPDX form, not the deprecated table."""
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "liverseg contributors" in text
    with zipfile.ZipFile(built_wheel) as z:
        names = z.namelist()
        licences = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(licences) == 1, names
        assert z.read(licences[0]) == (ROOT / "LICENSE").read_bytes()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta


def test_every_module_imports_from_the_clean_install(clean_env):
    mods = source_modules()
    assert "liverseg.models.unet" in mods and "liverseg.core.images" in mods
    script = f"""
import importlib, json, sys, traceback
site = {str(clean_env["site"])!r}
out = {{"failed": {{}}, "outside": {{}}}}
import liverseg
out["liverseg_file"] = liverseg.__file__
for name in {mods!r}:
    try:
        m = importlib.import_module(name)
    except BaseException as e:
        out["failed"][name] = "".join(traceback.format_exception_only(type(e), e)).strip()
        continue
    f = getattr(m, "__file__", None) or ""
    if not f.startswith(site):
        out["outside"][name] = f
out["editable_finder"] = any("editable" in type(f).__name__.lower() or "editable" in repr(f).lower()
                             for f in sys.meta_path)
print(json.dumps(out))
"""
    proc = run([str(clean_env["python"]), "-c", script], cwd=clean_env["cwd"], env=clean_env["env"], timeout=600)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["liverseg_file"].startswith(str(clean_env["site"])), out["liverseg_file"]
    assert not out["editable_finder"], "the editable install's finder is active in the clean environment"
    assert not out["failed"], "modules that do not import from the wheel:\n" + "\n".join(
        f"{k}: {v}" for k, v in out["failed"].items()
    )
    assert not out["outside"], f"modules imported from outside the clean install: {out['outside']}"


def test_no_stray_top_level_packages_installed(clean_env):
    site = clean_env["site"]
    for stray in {n.split(".")[-1] for n in PACKAGE_DIR if n != "liverseg"}:
        assert not (site / stray).exists(), f"{stray}/ was installed as a top-level package"
    assert (site / "liverseg" / "models" / "unet.py").exists()


def test_console_scripts_point_at_existing_functions(clean_env):
    scripts: dict[str, str] = PYPROJECT["project"].get("scripts", {})
    assert "liverseg-demo" in scripts
    script = f"""
import importlib, json
bad = {{}}
for name, target in {scripts!r}.items():
    mod, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            bad[name] = f"{{target}} is not callable"
    except BaseException as e:
        bad[name] = f"{{target}}: {{type(e).__name__}}: {{e}}"
print(json.dumps(bad))
"""
    proc = run([str(clean_env["python"]), "-c", script], cwd=clean_env["cwd"], env=clean_env["env"])
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not bad, bad
    # the installer wrote the launchers
    bindir = clean_env["python"].parent
    for name in scripts:
        assert (bindir / name).exists(), f"console script {name} not installed"

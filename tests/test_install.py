"""The layered install: the base runs inference without torch; each extra's command says what it needs.

The wheel is built and installed (``--no-deps``) into a fresh virtual environment, as in
tests/test_packaging.py. Its dependencies come from a folder of links to this
environment's packages *less the extras'* (torch, onnx, onnxscript, pandas, matplotlib,
scipy, SimpleITK, pydicom, OpenVINO, ...): to that environment those packages are not
installed, as after ``pip install 'liverseg[cpu]'`` (no network is needed). Then:

* ``liverseg-infer`` on one PNG, on a NIfTI volume and on a CSV list, and ``liverseg.segment``
  on a 2D array and on a volume array work, and never import torch, onnx, onnxscript,
  pandas or matplotlib;
* the commands of an extra (``liverseg-train``, ``liverseg-export``, a DICOM input, an
  OpenVINO engine) say which extra to install, one line, exit 2;
* with an extra's packages added back, its command works;
* an environment holding both onnxruntime and onnxruntime-gpu is refused with the fix.

The wheel's metadata is checked too: the base requires neither torch nor any ONNX
Runtime, and no extra installs both runtimes. And one test installs ``liverseg[cpu]``
from the wheel and the package index into an empty environment and weighs it (at most
250 MB; it needs the network and is skipped without it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_packaging import build_wheel, run  # noqa: E402

pytestmark = pytest.mark.slow

# What each extra adds: top-level names in site-packages (modules, their .libs, their dist-info names).
EXTRA_PACKAGES = {
    "train": {"torch", "torchgen", "functorch", "onnx", "onnxscript", "onnx_ir"},
    "volumes": {"scipy", "simpleitk", "pydicom", "highdicom", "mrcfile", "pylibjpeg", "libjpeg", "openjpeg", "rle"},
    "openvino": {"openvino", "openvino_telemetry"},
    # pandas and matplotlib with the packages only they bring (fontTools, kiwisolver, tzdata, ...)
    "study": {"pandas", "matplotlib", "mpl_toolkits", "pylab", "fonttools", "kiwisolver", "contourpy", "cycler",
              "tzdata", "dateutil", "python_dateutil"},
}  # fmt: skip
ALL_EXTRAS = set(EXTRA_PACKAGES)
BASE = {"numpy", "click", "tqdm", "pillow", "nibabel", "zlib-ng"}
# Modules the base install must never import (nor have: they are not installed there).
HEAVY = ("torch", "onnx", "onnxscript", "pandas", "matplotlib", "scipy")
# Runs a console script's main() and, at its exit, fails when a heavy module was imported.
WATCH = """
import atexit, os, sys
def _check():
    heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
    if heavy:
        print('imported:', heavy, file=sys.stderr)
        os._exit(9)
atexit.register(_check)
sys.argv = {argv!r}
from {module} import {attr}
{attr}()
"""


def _top_name(entry: str) -> str:
    """``torch-2.13.0.dist-info`` -> ``torch``, ``scipy.libs`` -> ``scipy``, ``pylibjpeg_rle-2.0.dist-info`` ->
    ``pylibjpeg``."""
    name = entry.lower().split("-")[0].split(".")[0]
    return "pylibjpeg" if name.startswith("pylibjpeg") else name


def _blocked(entry: str, without: set[str]) -> bool:
    return any(_top_name(entry) in EXTRA_PACKAGES[extra] for extra in without)


def _light_env(tmp: Path, wheel: Path, without: set[str]) -> dict:
    """A fresh venv with the wheel, seeing this environment's packages less those of the extras ``without``."""
    deps = tmp / "deps"
    deps.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        if entry.name.startswith(("__editable__", "_liverseg", "liverseg")) or entry.suffix == ".pth":
            continue  # the editable install of this checkout is not part of a user's environment
        if not _blocked(entry.name, without):
            (deps / entry.name).symlink_to(entry)
    env_dir = tmp / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    )
    (site / "_liverseg_test_deps.pth").write_text(str(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", LIVERSEG_CACHE_DIR=str(tmp / "cache"), HOME=str(tmp))
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "--quiet"]
    run([*pip, str(wheel)], cwd=tmp, env=env)
    return {"python": py, "bin": py.parent, "env": env, "cwd": tmp, "deps": deps}


def _cmd(light: dict, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=light["cwd"], env=light["env"], capture_output=True, text=True, timeout=timeout)


def _infer_argv(light: dict, tiny: dict[str, Path], tmp_path: Path) -> list[str]:
    """``liverseg-infer`` of that environment on the tiny model and slice."""
    return [str(light["bin"] / "liverseg-infer"), str(tiny["png"]), "--model", str(tiny["onnx"]),
            "--out", str(tmp_path / "o")]  # fmt: skip


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("pkg"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny exported model, its checkpoint and a PNG slice, made here (this environment has torch)."""
    import torch

    from liverseg.checkpoint import Checkpoint
    from liverseg.core.preprocess import Preprocessing
    from liverseg.export.onnx import export_onnx
    from liverseg.models import create_model

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    args = {"in_channels": 1, "out_channels": 1, "width": 4}
    net = create_model("unet", **args)
    ckpt = Checkpoint("unet", args, Preprocessing(), {k: v.clone() for k, v in net.state_dict().items()})
    png = d / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40)).astype(np.uint8)).save(png)
    return {
        "onnx": export_onnx(ckpt, d / "model.onnx", example_shape=(1, 1, 64, 64)),
        "pt": ckpt.save(d / "model.pt"),
        "png": png,
    }


@pytest.fixture(scope="module")
def light(built_wheel, tmp_path_factory) -> dict:
    """The base install: no train, volumes or openvino extra."""
    return _light_env(tmp_path_factory.mktemp("light"), built_wheel, ALL_EXTRAS)


def test_wheel_metadata_layers(built_wheel):
    with zipfile.ZipFile(built_wheel) as z:
        meta = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    base = {re.split(r"[<>=!~;\[ ]", r)[0].lower() for r in requires if "extra ==" not in r}
    assert base == BASE, f"the base install must be inference only: {sorted(base)}"

    def extra(name: str) -> list[str]:
        return [r for r in requires if f'extra == "{name}"' in r]

    assert any(r.startswith("torch") for r in extra("train")) and any(r.startswith("onnx>") for r in extra("train"))
    assert [r.split(">")[0] for r in extra("cpu")] == ["onnxruntime"]
    assert any(r.startswith("onnxruntime-gpu[cuda,cudnn]") for r in extra("gpu"))
    assert any(r.startswith("nvidia-cublas") for r in extra("gpu")), "onnxruntime-gpu's [cuda] leaves cuBLAS out"
    assert any(r.startswith("dicomweb-client") for r in extra("dicomweb")), "[dicomweb]: DICOMweb inputs, --store"
    for name in ("gpu", "train", "volumes", "openvino", "dicomweb", "all"):
        names = {re.split(r"[<>=!~;\[ ]", r)[0] for r in extra(name)}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"[{name}] installs both runtimes"
    assert not any(r.startswith("onnxruntime") for r in extra("all")), "[all] leaves the runtime choice to the user"
    # dev: one runtime per platform, under markers that exclude each other
    dev = {r.split(">")[0]: r for r in extra("dev") if r.startswith("onnxruntime")}
    assert set(dev) == {"onnxruntime", "onnxruntime-gpu"}
    assert 'platform_system == "Linux" and platform_machine == "x86_64"' in dev["onnxruntime-gpu"]
    assert 'platform_system != "Linux" or platform_machine != "x86_64"' in dev["onnxruntime"]
    assert "License-Expression: MIT" in meta


def test_the_light_environment_lacks_the_extras(light):
    for module in ("torch", "pandas", "matplotlib"):
        r = _cmd(
            light, [str(light["python"]), "-c", f"import onnxruntime, numpy, nibabel, PIL, click; import {module}"]
        )
        assert r.returncode != 0 and f"No module named '{module}'" in r.stderr, r.stderr


def _watched_infer(light: dict, args: list[str]) -> subprocess.CompletedProcess:
    """``liverseg-infer ARGS`` in the light environment, failing (exit 9) if it imported a module of HEAVY."""
    code = WATCH.format(heavy=HEAVY, argv=["liverseg-infer", *args], module="liverseg.infer.cli", attr="main")
    return _cmd(light, [str(light["python"]), "-c", code])


def _small_ct_nifti(folder: Path) -> Path:
    """A 6-slice CT volume in HU (a disc of soft tissue in air) as ``folder/ct.nii.gz``."""
    import nibabel as nib

    folder.mkdir(exist_ok=True)
    z, y, x = np.mgrid[:6, :40, :48]
    noise = np.random.default_rng(0).normal(0, 10, z.shape)
    hu = np.rint(np.where((y - 20) ** 2 + (x - 24) ** 2 < 300, 60, -1000) + noise + z).astype(np.int16)
    nii = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([-0.8, -0.8, 2.5, 1.0])), str(nii))
    return nii


def test_liverseg_infer_on_a_png_a_nifti_and_a_csv_imports_no_heavy_module(light, tiny):
    d = light["cwd"] / "inputs"
    nii = _small_ct_nifti(d)
    csv = d / "test_x.csv"
    csv.write_text(f"X\n{tiny['png']}\n")
    for name, source, want in (
        ("png", tiny["png"], "masks/slice_pred.png"),
        ("nifti", nii, "masks/ct.nii.gz"),
        ("csv", csv, "masks/slice_pred.png"),
    ):
        out = light["cwd"] / f"run-{name}"
        r = _watched_infer(light, [str(source), "--model", str(tiny["onnx"]), "-o", str(out), "--device", "cpu"])
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"
        assert (out / want).is_file() and (out / "report.html").is_file(), name
        assert "Traceback" not in r.stderr


def test_a_study_command_without_its_extra_names_it(light, tiny):
    for argv in (["liverseg-split", str(tiny["png"])], ["liverseg-figures", "curves", str(tiny["png"])]):
        r = _cmd(light, [str(light["bin"] / argv[0]), *argv[1:]])
        text = r.stdout + r.stderr
        assert r.returncode == 2 and "pip install 'liverseg[study]'" in text and "Traceback" not in text, text


def test_python_api_on_arrays_without_torch(light, tiny):
    code = f"""
import sys, numpy as np, liverseg
model = {str(tiny["onnx"])!r}
m2 = liverseg.segment(np.full((40, 48), 90, np.uint8), model, device="cpu")
ct = np.tile(np.where(np.arange(32) > 12, 60, -1000).astype(np.int16), (4, 32, 1))
# a two-valued phantom: allow_non_ct, or it is refused as a label map
m3, p3 = liverseg.segment(ct, model, spacing=(2.5, 0.8, 0.8), probabilities=True, device="cpu", allow_non_ct=True)
aff = np.diag([-0.8, -0.8, 2.5, 1.0])
m4 = liverseg.segment(ct.transpose(2, 1, 0), model, affine=aff, device="cpu", allow_non_ct=True)
assert m2.shape == (40, 48) and m3.shape == p3.shape == (4, 32, 32) and m4.shape == (32, 32, 4)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("heavy", heavy)
sys.exit(1 if heavy else 0)
"""
    r = _cmd(light, [str(light["python"]), "-c", code])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["liverseg-train", "--help"], "train"),
        (["liverseg-eval", "--help"], "train"),
        (["liverseg-export", "{pt}", "--out", "{tmp}/exp"], "train"),
        (["liverseg-infer", "{png}", "--model", "{pt}", "--out", "{tmp}/ckpt-run"], "train"),
        (["liverseg-infer", "{png}", "--model", "{onnx}", "--engine", "openvino", "--out", "{tmp}/ov"], "openvino"),
        (["liverseg-infer", "{png}", "--model", "{onnx}", "--largest-component", "--out", "{tmp}/lc"], "volumes"),
    ],
)
def test_a_command_that_needs_an_extra_names_it(light, tiny, args, extra):
    fill = {"pt": tiny["pt"], "png": tiny["png"], "onnx": tiny["onnx"], "tmp": light["cwd"]}
    argv = [str(light["bin"] / args[0])] + [a.format(**fill) for a in args[1:]]
    r = _cmd(light, argv)
    text = r.stdout + r.stderr
    assert f"pip install 'liverseg[{extra}]'" in text, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    assert r.returncode != 0


@pytest.mark.parametrize(
    ("extra", "argv"),
    [
        ("train", ["liverseg-train", "--help"]),
        ("train", ["liverseg-infer", "{png}", "--model", "{pt}", "--out", "{tmp}/ckpt-run", "--device", "cpu"]),
        ("volumes", ["liverseg-infer", "{png}", "--model", "{onnx}", "--largest-component", "--out", "{tmp}/lc"]),
    ],
)
def test_each_extras_command_works_once_it_is_installed(built_wheel, tiny, tmp_path, extra, argv):
    with_extra = _light_env(tmp_path, built_wheel, ALL_EXTRAS - {extra} - ({"study"} if extra == "train" else set()))
    fill = {"pt": tiny["pt"], "png": tiny["png"], "onnx": tiny["onnx"], "tmp": tmp_path}
    r = _cmd(with_extra, [str(with_extra["bin"] / argv[0])] + [a.format(**fill) for a in argv[1:]])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def test_both_onnx_runtimes_installed_is_refused_with_the_fix(light, tiny, tmp_path):
    # a second runtime distribution beside the one this environment has (onnxruntime-gpu here)
    have = {p.name.split("-")[0].lower() for p in light["deps"].glob("onnxruntime*.dist-info")}
    other = "onnxruntime" if "onnxruntime_gpu" in have else "onnxruntime_gpu"
    fake = tmp_path / "fake"
    (fake / f"{other}-1.31.0.dist-info").mkdir(parents=True)
    (fake / f"{other}-1.31.0.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {other.replace('_', '-')}\nVersion: 1.31.0\n"
    )
    r = _cmd({**light, "env": {**light["env"], "PYTHONPATH": str(fake)}}, _infer_argv(light, tiny, tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "both onnxruntime and onnxruntime-gpu are installed" in r.stderr
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in r.stderr and "Traceback" not in r.stderr


def test_no_onnx_runtime_names_the_choice(built_wheel, tiny, tmp_path):
    env = _light_env(tmp_path, built_wheel, ALL_EXTRAS)
    for link in env["deps"].glob("onnxruntime*"):
        link.unlink()
    r = _cmd(env, _infer_argv(env, tiny, tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "ONNX Runtime is not installed" in r.stderr and "pip install 'liverseg[cpu]'" in r.stderr
    assert "liverseg[gpu]" in r.stderr and "Traceback" not in r.stderr


def test_device_cuda_message_names_the_missing_library_and_packages(monkeypatch):
    from liverseg.core import engine

    log = (
        "\x1b[1;31m2026 [E:onnxruntime:Default, provider_bridge_ort.cc:2251] Failed to load library "
        "/x/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared "
        "object file: No such file or directory\x1b[m"
    )
    monkeypatch.setattr(engine, "_driver_loads", lambda: True)
    monkeypatch.setattr(engine, "installed", lambda names: ["nvidia-cuda-runtime"])
    short, full = engine.cuda_missing(engine.cuda_reason(log))
    assert short == "libcublasLt.so.13 is missing (pip package nvidia-cublas)"
    assert "not installed: nvidia-cublas, nvidia-cuda-nvrtc, nvidia-cudnn-cu13, nvidia-cufft, nvidia-curand" in full
    assert "pip install 'liverseg[gpu]' (CUDA 13, cuDNN 9)" in full
    worst = f"--device cuda: CUDA did not load, onnxruntime would have run on the CPU: {full}"
    monkeypatch.setattr(engine, "installed", lambda names: [])
    _, everything_missing = engine.cuda_missing(engine.cuda_reason(log))
    longest = f"--device cuda: CUDA did not load, onnxruntime would have run on the CPU: {everything_missing}"
    assert len(worst) <= len(longest) <= 300, "the message is one line the command prints whole (first_line)"
    monkeypatch.setattr(engine, "_driver_loads", lambda: False)
    short, _ = engine.cuda_missing(engine.cuda_reason(log))
    assert short.startswith("no NVIDIA driver on this machine")


def test_missing_extra_messages():
    from liverseg.core.extras import missing_extra

    assert missing_extra(ModuleNotFoundError("x", name="torch.nn"), "liverseg-train") == (
        "liverseg-train needs torch, which the 'train' extra installs: pip install 'liverseg[train]'"
    )
    assert "pip install 'liverseg[volumes]'" in (missing_extra(ModuleNotFoundError("x", name="pydicom")) or "")
    assert "liverseg[cpu]" in (missing_extra(ModuleNotFoundError("x", name="onnxruntime")) or "")
    assert "liverseg[dicomweb]" in (missing_extra(ModuleNotFoundError("x", name="requests")) or "")
    assert missing_extra(ModuleNotFoundError("x", name="cowsay")) is None  # no extra holds it
    assert missing_extra(ValueError("torch")) is None


@pytest.mark.parametrize("command", ["liverseg-infer", "liverseg-report", "liverseg-eda"])
def test_shell_completion_of_the_installed_commands(light, command):
    """click's completion (docs/install.md, "Shell completion"): the script, and the options it completes."""
    var = "_" + command.upper().replace("-", "_") + "_COMPLETE"
    exe = str(light["bin"] / command)
    script = _cmd(light, ["env", f"{var}=bash_source", exe])
    assert script.returncode == 0 and f"_{command.replace('-', '_')}_completion()" in script.stdout, script.stderr
    words = subprocess.run(
        [exe],
        env={**light["env"], var: "bash_complete", "COMP_WORDS": f"{command} --", "COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "plain,--help" in words.stdout and "plain,--debug" in words.stdout, words.stdout + words.stderr


def test_shell_completion_through_the_launcher_of_an_extras_command():
    """liverseg-train goes through liverseg.launch; completion reaches its click command."""
    code = "import sys; sys.argv = ['liverseg-train']; from liverseg.launch import train_main; train_main()"
    env = {
        **os.environ,
        "_LIVERSEG_TRAIN_COMPLETE": "bash_complete",
        "COMP_WORDS": "liverseg-train --",
        "COMP_CWORD": "1",
    }
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "plain,--nproc-per-node" in r.stdout, r.stdout + r.stderr


# A fresh `pip install 'liverseg[cpu]'` weighs at most this (the bar; it was 406 MB with pandas and matplotlib).
INSTALL_BUDGET_MB = 250
INDEX = "https://pypi.org/simple"


def _index_reachable(url: str = INDEX) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url + "/pip/", timeout=10).close()
    except OSError:
        return False
    return True


def _tree_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (their sizes, links not followed)."""
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_fresh_cpu_install_weighs_at_most_250_mb_and_runs(built_wheel, tiny, tmp_path):
    """``pip install 'liverseg[cpu]'`` from the built wheel and the package index into an empty environment.

    pip runs ``--isolated`` against the public index, so this machine's configuration (local
    wheel folders, constraints) does not choose the versions; its download cache is used. The
    environment then segments a PNG and a NIfTI volume without importing a module of HEAVY.
    About 10 s with a warm cache on a 2-core Xeon (2026-12-07); skipped without the network.
    """
    if not _index_reachable():
        pytest.skip(f"{INDEX} is not reachable")
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    cert = ["--cert", os.environ["PIP_CERT"]] if os.environ.get("PIP_CERT") else []
    spec = f"liverseg[cpu] @ {built_wheel.resolve().as_uri()}"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "--isolated", "install", "--quiet", *cert]
    subprocess.run([*pip, "--index-url", INDEX, spec], check=True, timeout=900, capture_output=True, text=True)
    site = Path(
        run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    )
    names = sorted(p.name.split("-")[0].lower() for p in site.glob("*.dist-info"))
    assert "onnxruntime" in names and not {"pandas", "matplotlib", "torch"} & set(names), names
    sizes = {p.name: _tree_bytes(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
    total_mb = sum(sizes.values()) / 1e6
    largest = ", ".join(f"{n} {b / 1e6:.0f}" for n, b in sorted(sizes.items(), key=lambda kv: -kv[1])[:8])
    print(f"liverseg[cpu] fresh install: {total_mb:.0f} MB ({largest})")
    assert total_mb <= INSTALL_BUDGET_MB, f"{total_mb:.0f} MB > {INSTALL_BUDGET_MB} MB; largest (MB): {largest}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", LIVERSEG_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path))
    fresh = {"python": py, "bin": py.parent, "cwd": tmp_path, "env": env}
    r = _watched_infer(fresh, [str(tiny["png"]), "--model", str(tiny["onnx"]), "-o", str(tmp_path / "o")])
    assert r.returncode == 0 and (tmp_path / "o" / "masks" / "slice_pred.png").is_file(), r.stdout + r.stderr
    nii = _small_ct_nifti(tmp_path / "inputs")
    r = _watched_infer(fresh, [str(nii), "--model", str(tiny["onnx"]), "-o", str(tmp_path / "v")])
    assert r.returncode == 0 and (tmp_path / "v" / "masks" / "ct.nii.gz").is_file(), r.stdout + r.stderr

"""Which optional extra installs which package, and the checks that name it instead of a traceback.

liverseg installs in layers (pyproject.toml):

* the base: ``liverseg-infer``, the Python API and the shipped model, without torch,
  onnx or onnxscript;
* a required choice of ONNX Runtime: ``[cpu]`` (``onnxruntime``) or ``[gpu]``
  (``onnxruntime-gpu`` with the CUDA 13 and cuDNN 9 wheels);
* ``[train]`` (torch, onnx, onnxscript and ``[study]``), ``[study]`` (pandas and
  matplotlib: the study's tables and charts), ``[volumes]`` (DICOM, NRRD/MetaImage, MRC,
  scipy), ``[openvino]``; ``[all]`` is all four.

``onnxruntime`` and ``onnxruntime-gpu`` install the same module, ``onnxruntime``: the one
installed last overwrites the other's files, and uninstalling either breaks the other.
pip cannot express "one of", so the base depends on neither and :func:`runtime_clash`
refuses an environment that holds both, with the command that fixes it; a missing runtime
is named with the choice to install (:data:`RUNTIME_CHOICE`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

__all__ = [
    "EXTRA_OF",
    "GPU_LIBRARIES",
    "RUNTIMES",
    "install_hint",
    "installed",
    "missing_extra",
    "runtime_clash",
]

# top-level module -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "torch": "train",
    "onnx": "train",
    "onnxscript": "train",
    "onnx_ir": "train",
    "pydicom": "volumes",
    "highdicom": "volumes",
    "pylibjpeg": "volumes",
    "SimpleITK": "volumes",
    "scipy": "volumes",
    "mrcfile": "volumes",
    "pandas": "study",
    "matplotlib": "study",
    "openvino": "openvino",
    "dicomweb_client": "dicomweb",
    "requests": "dicomweb",
    "onnxruntime": "cpu",  # or gpu: see RUNTIME_CHOICE
}
# The distributions that provide the module ``onnxruntime`` (they overwrite each other).
RUNTIMES = ("onnxruntime", "onnxruntime-gpu")
RUNTIME_CHOICE = "pip install 'liverseg[cpu]' (or 'liverseg[gpu]' for NVIDIA GPUs: CUDA 13, cuDNN 9)"
# onnxruntime-gpu 1.31's CUDA libraries -> the pip package that ships them ([gpu] installs them all)
GPU_LIBRARIES: dict[str, str] = {
    "libcublas": "nvidia-cublas",
    "libcublasLt": "nvidia-cublas",
    "libcudart": "nvidia-cuda-runtime",
    "libcudnn": "nvidia-cudnn-cu13",
    "libcufft": "nvidia-cufft",
    "libcurand": "nvidia-curand",
    "libnvrtc": "nvidia-cuda-nvrtc",
}


def install_hint(extra: str) -> str:
    return RUNTIME_CHOICE if extra == "cpu" else f"pip install 'liverseg[{extra}]'"


def missing_extra(e: BaseException, what: str = "this command", extra: str | None = None) -> str | None:
    """The one-line message for an import of a package an extra provides, or None for any other error.

    ``extra``: the extra the command belongs to, named instead of the package's own (``[train]``
    installs ``[study]`` too: liverseg-train lacking pandas says ``[train]``).
    """
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    top = e.name.split(".")[0]
    own = EXTRA_OF.get(top)
    if own is None:
        return None
    extra = own if own == "cpu" or extra is None else extra
    if extra == "cpu":
        return f"{what} needs ONNX Runtime, which is not installed: {RUNTIME_CHOICE}"
    return f"{what} needs {top}, which the '{extra}' extra installs: {install_hint(extra)}"


def installed(names: Iterable[str]) -> list[str]:
    """Those of the distributions ``names`` installed in this environment."""
    found = []
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def runtime_clash() -> str | None:
    """The message for an environment holding both onnxruntime and onnxruntime-gpu, else None."""
    if len(installed(RUNTIMES)) < 2:
        return None
    return (
        "both onnxruntime and onnxruntime-gpu are installed; they install the same module and overwrite "
        "each other's files, so which one runs is an accident. Keep one: pip uninstall -y onnxruntime "
        "onnxruntime-gpu, then pip install 'liverseg[cpu]' or 'liverseg[gpu]'"
    )

"""What a result was measured on: CPU, cores, ISA flags, library versions, date, command.

Every results file carries this stamp, and the results folder is named after the
machine *kind* (CPU model, visible cores and best vector ISA), so numbers from
different kinds of machine never land in one table.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys
import time as _time
from pathlib import Path
from typing import Any

from liverseg.core.engine import cpu_flags as engine_cpu_flags
from liverseg.core.engine import cpuinfo_flags, simulated_cpu_flags, usable_cores
from liverseg.core.files import versions as core_versions

# Vector/matrix extensions that decide conv and matmul speed, in the order shown.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    m = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return m.group(1).strip() if m else (platform.processor() or platform.machine())


def cpu_family() -> str:
    info = _cpuinfo()
    fam = re.search(r"^cpu family\s*:\s*(\d+)$", info, re.M)
    mod = re.search(r"^model\s*:\s*(\d+)$", info, re.M)
    return f"family {fam.group(1)} model {mod.group(1)}" if fam and mod else ""


def cpu_flags(hardware: bool = False) -> list[str]:
    """The ISA flags from :data:`ISA_FLAGS` this CPU reports: as the engine choice sees them
    (``$LIVERSEG_CPU_FLAGS`` simulates a CPU), or the hardware's own with ``hardware``."""
    have = engine_cpu_flags() if not hardware else cpuinfo_flags()
    return [f for f in ISA_FLAGS if f in have]


def cores() -> int:
    """CPUs this process may run on (affinity), not the host's count."""
    return usable_cores()


def best_isa(flags: list[str]) -> str:
    for f in ("amx_tile", "avx512_vnni", "avx512f", "avx2", "avx"):
        if f in flags:
            return {"amx_tile": "amx", "avx512_vnni": "avx512vnni", "avx512f": "avx512"}.get(f, f)
    return platform.machine()


def machine_kind() -> str:
    """Folder name for results: ``<cpu-model>-<cores>c-<best isa>``, e.g. ``amd-epyc-2c-avx2``; a simulated
    CPU (``$LIVERSEG_CPU_FLAGS``) adds ``-as-<its best isa>``, so its rows never join the real machine's."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower())
    slug = re.sub(r"-(\d+-core-processor|processor|cpu)$", "", slug.strip("-"))
    slug = re.sub(r"-+", "-", slug)[:40].strip("-")
    kind = f"{slug}-{cores()}c-{best_isa(cpu_flags(hardware=True))}"
    return kind if simulated_cpu_flags() is None else f"{kind}-as-{best_isa(cpu_flags())}"


def versions() -> dict[str, str]:
    """:func:`liverseg.core.files.versions` plus what only a benchmark needs: numpy's BLAS, torch's threads and CUDA."""
    out = dict(core_versions())
    try:
        import numpy

        cfg = numpy.show_config(mode="dicts")  # numpy >= 1.25
        blas = (cfg or {}).get("Build Dependencies", {}).get("blas", {})
        out["numpy_blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict form of the build configuration
        pass
    try:
        import torch

        out["torch_threads"] = str(torch.get_num_threads())
        if torch.version.cuda:
            out["torch_cuda"] = str(torch.version.cuda)
    except Exception:  # torch absent or broken: the stamp still lists the rest
        pass
    return out


def git_commit(repo: Path | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except Exception:
        return None


def command_line(argv: list[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    prog = Path(argv[0]).name if argv else "?"
    if prog in ("__main__.py", "-c", "cli.py"):
        prog = "python -m liverseg.benchmarks"
    return " ".join([prog, *map(shlex.quote, argv[1:])])


def stamp(argv: list[str] | None = None) -> dict[str, Any]:
    """The header of every results file."""
    flags = cpu_flags()
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(argv),
        "machine_kind": machine_kind(),
        "cpu_model": cpu_model(),
        "cpu_family": cpu_family(),
        "cores": cores(),
        "isa_flags": flags,  # as the engine choice saw them: a simulated CPU's under $LIVERSEG_CPU_FLAGS
        "isa_flags_simulated": simulated_cpu_flags() is not None,
        "hardware_isa_flags": cpu_flags(hardware=True),
        "platform": platform.platform(),
        "versions": versions(),
        "git_commit": git_commit(),
        "omp_wait_policy": os.environ.get("LIVERSEG_BENCH_OMP_POLICY")
        or os.environ.get("OMP_WAIT_POLICY", "default (active)"),
    }


def rss_kb() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process in KiB (Linux)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0])
    except OSError:
        pass
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- a command in a fresh interpreter


def _cli_code(module: str, prog: str, hwm_file: Path) -> str:
    """``python -c`` code that runs ``module``'s click ``main`` and writes its VmHWM (KiB) to ``hwm_file`` at exit.

    The child reports its own high-water mark: the rusage of a forked child also counts
    the parent's pages it shared before exec, which is not the command's memory.
    """
    return (
        "import atexit, sys\n"
        "def _hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        f"            open({str(hwm_file)!r}, 'w').write(line.split()[1])\n"
        "atexit.register(_hwm)\n"
        f"from {module} import main\n"
        f"sys.argv[0] = {prog!r}\n"
        "main()\n"
    )


def start_cli(
    module: str, prog: str, args: list[str], hwm_file: Path, python: str | None = None, **popen: Any
) -> subprocess.Popen:
    """Start ``prog ARGS`` (``module``'s ``main``) in a fresh interpreter (``python``, default this one);
    its peak memory goes to ``hwm_file``."""
    hwm_file.unlink(missing_ok=True)
    return subprocess.Popen([python or sys.executable, "-c", _cli_code(module, prog, hwm_file), *args], **popen)


def peak_mb(hwm_file: Path) -> float:
    """The peak resident memory a :func:`start_cli` child wrote at exit (MB), NaN when it wrote none (killed)."""
    try:
        return int(hwm_file.read_text()) / 1024.0
    except (OSError, ValueError):
        return float("nan")


def run_cli(
    module: str, prog: str, args: list[str], hwm_file: Path, python: str | None = None
) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak MB, stderr) of ``prog ARGS`` run to its end in a fresh interpreter."""
    t0 = _time.perf_counter()
    proc = start_cli(module, prog, args, hwm_file, python, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    return proc.returncode, _time.perf_counter() - t0, peak_mb(hwm_file), err.decode(errors="replace")

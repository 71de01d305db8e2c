"""Peak resident memory of one backend, measured in a fresh interpreter.

Why a subprocess: in the benchmark process every backend is loaded at once, and
memory that one backend's allocator took (ORT arenas, oneDNN caches, glibc heaps)
stays mapped and is reused by the next; the process's peak RSS cannot be split
among them. Here only one backend lives in the process, and ONNX Runtime rows do
not even import torch (the ONNX Runtime runner does not need it either), so the
number is what a user's process running that backend needs.

How: read ``VmRSS`` at start and after ``setup``, then for every case (ascending
work) reset the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), run
the backend ``calls`` times (1 by default: the first call makes every allocation --
ORT's arena and torch's allocator reuse them afterwards) and read ``VmHWM``. Where the reset is not allowed the
peak is cumulative over the cases so far, which the answer says.

Usage (internal): ``python -m liverseg.benchmarks.memprobe '<json spec>'``; prints one
JSON line. Errors of the backend are recorded in that line (``error``), never raised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from liverseg.core.cli import command
from liverseg.core.errors import UsageError, describe


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from liverseg.benchmarks.backends import build_backend
    from liverseg.benchmarks.machine import reset_peak_rss, rss_kb

    out: dict[str, Any] = {"backend": spec["backend"], "rss_start_kb": rss_kb().get("VmRSS"), "cases": []}
    try:
        b = build_backend(
            spec["backend"], Path(spec["path"]), spec.get("threads"), spinning=spec.get("spinning", False)
        )
        b.setup()
    except Exception as e:
        out["error"] = describe(e)
        return out
    out["rss_setup_kb"] = rss_kb().get("VmRSS")
    out["torch_imported"] = "torch" in sys.modules
    out["provider"] = b.provider
    rng = np.random.default_rng(0)
    for size, batch in spec["cases"]:
        case: dict[str, Any] = {"size": size, "batch": batch}
        case["reset"] = reset_peak_rss()
        try:
            x = rng.integers(0, 256, (batch, 1, size, size), dtype=np.uint8)
            for _ in range(int(spec.get("calls", 1))):
                res = b.run(b.prepare(x))
                b.sync()
                b.fetch(res)
                del res
            mem = rss_kb()
            case["peak_kb"] = mem.get("VmHWM")
            case["rss_after_kb"] = mem.get("VmRSS")
        except Exception as e:
            case["error"] = describe(e)
        out["cases"].append(case)
    return out


@command()
@click.argument("spec_json", metavar="SPEC")
def main(spec_json: str) -> None:
    """Probe the backend described by the JSON object SPEC; print the answer as one JSON line."""
    try:
        spec = json.loads(spec_json)
    except json.JSONDecodeError as e:
        raise UsageError(f"SPEC is not JSON ({e.msg})") from None
    print(json.dumps(probe(spec)), flush=True)


if __name__ == "__main__":
    main(prog_name="python -m liverseg.benchmarks.memprobe")

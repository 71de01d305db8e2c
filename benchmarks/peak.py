"""The machine's measured float32 matrix-multiply peak: the ceiling a conv net can reach.

A large square float32 matmul (4096x4096 by default: 137 GFLOP per product) is timed
with numpy (OpenBLAS on this project's wheels) and with torch (MKL/oneDNN), each
warmed up once and then timed ``repeats`` times (2 in the benchmark: each 4096 product
takes seconds on 2 cores); the best rate of either library is
the peak. It is measured in the same process run as the backends it is compared with,
so the "fraction of peak" column is a ratio of two numbers taken minutes apart on the
same, possibly noisy, machine. Measuring it at the start and at the end of a run and
keeping the higher shows how much the machine moved in between.

Beside it, the same product in bfloat16 through torch (``torch_bf16_gflops``): AMX or
AVX-512 BF16 make it several times the fp32 rate; on a CPU without them it is emulated
and far slower (0.5 GFLOP/s on the AVX2-only EPYC: a 4096 product would take minutes),
so its size grows from 512 by doubling only while one product takes under
:data:`BF16_STEP_S`, up to ``n`` (``torch_bf16_n`` says where it stopped). It is
reported, never taken as the peak.

And the int8 product the int8 model files run on (``ort_int8_gflops``, integer
operations counted like FLOPs): ONNX Runtime's ``MatMulInteger``, uint8 x int8 -> int32,
at ``n`` (MLAS: AVX2 ``vpmaddubsw``, AVX-512 VNNI or AMX where the CPU has them; 276-335
GOP/s on the AVX2 EPYC against 177-188 GFLOP/s fp32). torch's ``_int_mm`` is no
yardstick on the CPU (2 GOP/s there). The benchmark sets each model row beside the rate
of its own precision.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from liverseg.core.errors import describe

BF16_STEP_S = 0.25  # the bf16 product grows while one takes less than this


def _bf16_inputs(n: int) -> tuple[Any, Any, int]:
    """Two bf16 matrices of the largest size (512, 1024, ... <= n) whose product takes under BF16_STEP_S."""
    import torch

    g = torch.Generator().manual_seed(0)
    m = min(512, n)
    while True:
        a = torch.randn(m, m, generator=g).to(torch.bfloat16)
        b = torch.randn(m, m, generator=g).to(torch.bfloat16)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if m * 2 > n or time.perf_counter() - t0 > BF16_STEP_S:
            return a, b, m
        m *= 2


def _ort_int8_product(n: int, threads: int | None) -> Callable[[], Any]:
    """One ``n x n`` uint8 x int8 ``MatMulInteger`` through ONNX Runtime's CPU provider, ready to call."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_matmul",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "A": rng.integers(0, 256, (n, n), dtype=np.uint8),
        "B": rng.integers(-128, 128, (n, n), dtype=np.int8),
    }
    return functools.partial(sess.run, None, feeds)


def _best_rate(fn: Callable[[], Any], flops: float, repeats: int) -> float:
    fn()  # warm-up: thread pools, page faults, library dispatch
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def matmul_peak(
    n: int = 4096,
    repeats: int = 3,
    threads: int | None = None,
    libraries: tuple[str, ...] = ("numpy", "torch", "torch_bf16", "ort_int8"),
) -> dict[str, Any]:
    """``{"numpy_gflops", "torch_gflops", "torch_bf16_gflops", "ort_int8_gflops", "peak_gflops", "peak_library",
    "n", "errors"}`` (the int8 rate counts integer multiply-adds as 2 operations, like the FLOPs).

    A library that fails is recorded in ``errors`` and left out of the maximum; the
    bf16 and int8 rates are never part of it (``peak_gflops`` is the float32 ceiling).
    """
    flops = 2.0 * n**3
    out: dict[str, Any] = {"n": n, "repeats": repeats, "dtype": "float32", "errors": {}}
    rates: dict[str, float] = {}
    for lib in libraries:
        try:
            if lib == "numpy":
                import numpy as np

                rng = np.random.default_rng(0)
                a = rng.standard_normal((n, n), dtype=np.float32)
                b = rng.standard_normal((n, n), dtype=np.float32)
                rates[lib] = _best_rate(functools.partial(np.matmul, a, b), flops, repeats)
            elif lib == "torch":
                import torch

                if threads:
                    torch.set_num_threads(threads)
                g = torch.Generator().manual_seed(0)
                ta = torch.randn(n, n, generator=g)
                tb = torch.randn(n, n, generator=g)
                rates[lib] = _best_rate(functools.partial(torch.mm, ta, tb), flops, repeats)
            elif lib == "torch_bf16":
                import torch

                if threads:
                    torch.set_num_threads(threads)
                ta, tb, m = _bf16_inputs(n)
                out["torch_bf16_n"] = m
                rates[lib] = _best_rate(functools.partial(torch.mm, ta, tb), 2.0 * m**3, repeats)
            elif lib == "ort_int8":
                rates[lib] = _best_rate(_ort_int8_product(n, threads), flops, repeats)
            else:
                raise ValueError(f"unknown library {lib!r}")
        except Exception as e:  # record, keep the other library's number
            out["errors"][lib] = describe(e)
        out[f"{lib}_gflops"] = rates.get(lib)
    fp32 = {k: v for k, v in rates.items() if k not in ("torch_bf16", "ort_int8")}
    if fp32:
        lib = max(fp32, key=lambda k: fp32[k])
        out["peak_gflops"] = fp32[lib]
        out["peak_library"] = lib
    else:
        out["peak_gflops"] = None
        out["peak_library"] = None
    return out


def cuda_matmul_peak(n: int = 8192, repeats: int = 10, dtype: str = "float16") -> dict[str, Any]:
    """Measured dense matmul rate on the current CUDA device (TFLOP/s), synchronised."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device="cuda", dtype=dt)
    b = torch.randn(n, n, device="cuda", dtype=dt)
    for _ in range(3):
        torch.mm(a, b)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    torch.cuda.synchronize()
    dt_s = (time.perf_counter() - t0) / repeats
    return {"n": n, "dtype": dtype, "tflops": 2.0 * n**3 / dt_s / 1e12}

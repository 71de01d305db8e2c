"""Measured parity between the eager pipeline and its exported files.

:func:`verify` runs the eager :class:`~liverseg.models.SegmentationPipeline` (CPU,
float32: the reference) and every exported artifact on the same inputs and reports,
per artifact and input set:

* ``prob_max_abs`` -- max |p - p_eager| of the probabilities;
* ``prob_rel_l2``  -- ||p - p_eager||_2 / ||p_eager||_2;
* ``mask_pixels_differ`` -- mask pixels that differ from the eager mask, and
  ``mask_pixels_differ_off_threshold`` -- those among them whose eager probability
  lies farther than ``prob_atol`` from the threshold (a float32 rounding difference
  can flip a pixel *at* the threshold, but never one away from it);
* on real slices: ``mask_dice_vs_eager`` and, with ground truth, mean Dice of the
  eager and the artifact masks and their difference ``dice_change``.

Inputs: random images at a batch size and image size different from the export's
(default 3 x 1 x 512 x 384: not a multiple of 16 in neither the batch nor the
export shape) and real slices when given. The artifact's contract (threshold,
preprocessing, model, input dtype) must also match the checkpoint's.

Tolerances are named constants per backend (:data:`TOLERANCES`): float32 backends
are judged on every input by probability differences and off-threshold mask
flips; float16 and int8 are judged on real slices by mask agreement and Dice change
(random inputs are reported, not judged: near-threshold pixels flip under any
rounding). A failure message names the measured value and the limit.

Engine gates (:func:`engine_gates`): every engine and precision ``liverseg-infer`` can
choose (ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8) is run on the real labelled
slices and compared with ONNX Runtime fp32: max probability difference, mask pixels
changed and the change of mean Dice. A row passes with at least
:data:`GATE_MIN_SLICES` labelled slices and a Dice change no worse than
``-GATE_MAX_DICE_DROP``; ``auto`` uses a reduced precision only where its row passed
(:mod:`liverseg.core.choose`). The rows go into parity.json and each file's contract.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverseg.core.batching import grouped_batches
from liverseg.core.contract import (
    INPUT_NAME,
    contract_from_metadata,
    read_onnx_contract,
    read_torchscript_contract,
)
from liverseg.core.engine import EngineOptions, open_engine
from liverseg.core.errors import ContractError, first_line
from liverseg.core.files import versions, write_text_atomic
from liverseg.core.metrics import confusion, image_scores, scores
from liverseg.models.checkpoint import Checkpoint

# float32 on CPU. An atol of 1e-5 is too tight: on *trained* weights the
# ONNX Runtime (MLAS) and PyTorch (oneDNN) summation orders gave up to 1.21e-5 on real
# 128x128 slices (demo U-Net w8; random weights stay below 1e-6), so the cap is 5e-5:
# still 200x below any visible change, and mask flips away from the threshold are
# judged separately (mask_pixels_differ_off_threshold must be 0).
FP32_PROB_ATOL = 5e-5
FP32_PROB_RTOL = 1e-3
# float32 through CUDA kernels (cuDNN picks other summation orders than MKL-DNN).
FP32_CUDA_PROB_ATOL = 1e-4
FP32_CUDA_PROB_RTOL = 1e-3
# float16: judged on real slices by mask agreement and Dice change.
FP16_MAX_MASK_FRACTION = 1e-3
FP16_MAX_DICE_DROP = 0.005
# int8 static QDQ: judged on real slices by mask agreement and Dice change.
INT8_MAX_MASK_FRACTION = 0.02
INT8_MAX_DICE_DROP = 0.02

DEFAULT_CHECK_SHAPE = (3, 1, 512, 384)
# Engine gates: a reduced precision is chosen by ``auto`` only within this Dice of fp32 on real slices.
GATE_MAX_DICE_DROP = 0.005
GATE_MIN_SLICES = 16


GATE_ROWS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
             ("openvino", "int8"))  # fmt: skip
TENSORRT_GATE_ROWS = (("tensorrt", "fp16"), ("tensorrt", "int8"))  # added where a GPU is present


@dataclass(frozen=True)
class Tolerance:
    """How one backend is judged; ``None`` leaves a figure reported but not judged."""

    prob_atol: float | None = None
    prob_rel_l2: float | None = None
    judge_random: bool = True
    max_mask_fraction: float | None = None
    max_dice_drop: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    "torchscript": Tolerance(prob_atol=FP32_PROB_ATOL, prob_rel_l2=FP32_PROB_RTOL),
    "onnx-fp32": Tolerance(prob_atol=FP32_PROB_ATOL, prob_rel_l2=FP32_PROB_RTOL),
    "onnx-fp32/cuda": Tolerance(prob_atol=FP32_CUDA_PROB_ATOL, prob_rel_l2=FP32_CUDA_PROB_RTOL),
    "torchscript/cuda": Tolerance(prob_atol=FP32_CUDA_PROB_ATOL, prob_rel_l2=FP32_CUDA_PROB_RTOL),
    "onnx-fp16": Tolerance(
        judge_random=False, max_mask_fraction=FP16_MAX_MASK_FRACTION, max_dice_drop=FP16_MAX_DICE_DROP
    ),
    "onnx-int8": Tolerance(
        judge_random=False, max_mask_fraction=INT8_MAX_MASK_FRACTION, max_dice_drop=INT8_MAX_DICE_DROP
    ),
}


@dataclass
class RealSlices:
    """Real slices for the check: uint8 [H, W] images and, when known, bool [H, W] masks."""

    images: list[np.ndarray]
    masks: list[np.ndarray | None] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.masks:
            self.masks = [None] * len(self.images)
        if len(self.masks) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.masks)} masks")

    @classmethod
    def from_samples(cls, samples: list[Any], source: str = "") -> RealSlices:
        from liverseg.core.images import read_image, read_mask

        imgs = [read_image(s.image) for s in samples]
        masks = [read_mask(s.mask) if s.mask is not None else None for s in samples]
        return cls(imgs, masks, source)


@dataclass
class BackendResult:
    """Parity of one artifact: measured figures per input set, and the verdict."""

    name: str
    backend: str
    path: str
    device: str
    tolerance_key: str
    tolerance: dict[str, Any]
    status: str = "pass"  # pass | fail | not_judged | error
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.failures.append(msg)
        self.status = "error" if self.status == "error" else "fail"


@dataclass
class ParityReport:
    """What :func:`verify` measured; ``ok`` is False when any artifact is out of tolerance."""

    checkpoint: str | None
    threshold: float
    reference: str
    results: list[BackendResult]
    inputs: list[dict[str, Any]]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=dict)
    timing: dict[str, Any] | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)  # engine_gates() rows

    @property
    def ok(self) -> bool:
        return all(r.status in ("pass", "not_judged") for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def write_json(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(_finite(self.to_dict()), indent=2) + "\n")

    def summary(self) -> str:
        """A few human-readable lines (one per artifact and input set)."""
        lines = []
        for r in self.results:
            lines.append(f"{r.name:<12} {r.status.upper():<10} {r.backend} on {r.device}: {r.path}")
            for c in r.checks:
                parts = [
                    f"  {c['inputs']:<30}",
                    f"prob max|d| {c['prob_max_abs']:.2e}",
                    f"rel L2 {c['prob_rel_l2']:.2e}",
                    f"mask px differ {c['mask_pixels_differ']}/{c['mask_pixels']}",
                ]
                if c.get("dice_change") is not None:
                    parts.append(f"Dice {c['dice_eager']:.4f} -> {c['dice_artifact']:.4f} ({c['dice_change']:+.4f})")
                lines.append("  ".join(parts))
            lines += [f"  FAIL: {f}" for f in r.failures]
            lines += [f"  note: {n}" for n in r.notes]
        for g in self.gates:
            verdict = "PASS" if g["passed"] else "no  "
            lines.append(f"gate {g['engine']:<11} {g['precision']:<5} {verdict} {g['reason']}")
        return "\n".join(lines)


def _finite(obj: Any) -> Any:
    """JSON without NaN/Infinity (null instead)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------- runners


class _Runner:
    """Runs one artifact on numpy batches: (probability float32, mask uint8)."""

    def __init__(self, path: Path, backend: str, device: str) -> None:
        self.path, self.backend, self.device = path, backend, device
        if backend == "torchscript":
            from liverseg.export.torchscript import load_torchscript

            self.contract = read_torchscript_contract(path)
            self.module, _ = load_torchscript(path, device=device, optimize=True)
        else:
            # TF32 off: the CUDA tolerances are for float32 arithmetic. DeviceError when CUDA does not load.
            options = EngineOptions(device="cuda" if device == "cuda" else "cpu", cuda_options={"use_tf32": "0"})
            self.engine = open_engine(path, options)
            self.contract = contract_from_metadata(self.engine.metadata(), str(path))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.backend == "torchscript":
            with torch.inference_mode():
                p, m = self.module(torch.from_numpy(x).to(self.device))
            return p.cpu().numpy(), m.cpu().numpy()
        p, m = self.engine.run({INPUT_NAME: x})
        return p, m


def _backend_of(path: Path) -> tuple[str, str]:
    """(backend, precision) from the artifact's own contract."""
    if path.suffix == ".pt":
        return "torchscript", read_torchscript_contract(path).get("precision", "fp32")
    return "onnx", read_onnx_contract(path).get("precision", "fp32")


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return image_scores(pred, truth)["dice"]


def _contract_problems(contract: dict[str, Any], ckpt: Checkpoint, threshold: float, raw: bool) -> list[str]:
    out = []
    if abs(float(contract["threshold"]) - threshold) > 1e-9:
        out.append(f"contract threshold {contract['threshold']} != expected {threshold}")
    if contract["preprocessing"] != ckpt.preprocessing.to_dict():
        out.append(f"contract preprocessing {contract['preprocessing']} != checkpoint's {ckpt.preprocessing.to_dict()}")
    model = contract.get("model", {})
    if model.get("name") != ckpt.model_name or model.get("args") != dict(ckpt.model_args):
        out.append(f"contract model {model} != checkpoint's {ckpt.model_name} {ckpt.model_args}")
    want = "float32" if raw else "uint8"
    if contract["inputs"][0]["dtype"] != want:
        out.append(f"contract input dtype {contract['inputs'][0]['dtype']} != expected {want}")
    return out


def _real_batches(real: RealSlices, batch: int) -> list[tuple[np.ndarray, list[int]]]:
    """Real slices grouped by shape into [n, 1, H, W] uint8 batches, with their indices."""
    groups = grouped_batches(real.images, lambda img: np.asarray(img).shape, batch)
    return [(np.stack([np.asarray(real.images[i], dtype=np.uint8) for i in idx])[:, None], idx) for idx in groups]


def _compare(
    p_ref: np.ndarray, m_ref: np.ndarray, p: np.ndarray, m: np.ndarray, threshold: float, atol: float
) -> dict[str, Any]:
    if p.shape != p_ref.shape or m.shape != m_ref.shape:
        raise ValueError(f"output shape {p.shape}/{m.shape} != eager {p_ref.shape}/{m_ref.shape}")
    if p.dtype != np.float32 or m.dtype != np.uint8:
        raise ValueError(f"output dtypes {p.dtype}/{m.dtype}; the contract says float32/uint8")
    d = np.abs(p.astype(np.float64) - p_ref.astype(np.float64))
    norm = float(np.linalg.norm(p_ref.astype(np.float64)))
    differ = m != m_ref
    off = differ & (np.abs(p_ref.astype(np.float64) - threshold) > atol)
    return {
        "prob_max_abs": float(d.max()) if d.size else 0.0,
        "prob_rel_l2": float(np.linalg.norm(d) / norm) if norm > 0 else float(np.linalg.norm(d)),
        "mask_pixels": int(m_ref.size),
        "mask_pixels_differ": int(np.count_nonzero(differ)),
        "mask_pixels_differ_off_threshold": int(np.count_nonzero(off)),
        "mask_differ_fraction": float(np.count_nonzero(differ) / max(1, m_ref.size)),
        # the eager mask as the truth; both empty is a Dice of 1 (the rule in liverseg.core.metrics)
        "mask_dice_vs_eager": scores(*confusion(m > 0, m_ref > 0))["dice"],
    }


def _judge(res: BackendResult, tol: Tolerance, check: dict[str, Any], real: bool) -> None:
    where = check["inputs"]
    if not real and not tol.judge_random:
        return
    if tol.prob_atol is not None:
        if not check["prob_max_abs"] <= tol.prob_atol:
            res.fail(f"{where}: probability max |diff| {check['prob_max_abs']:.3e} > atol {tol.prob_atol:g}")
        if check["mask_pixels_differ_off_threshold"] > 0:
            res.fail(
                f"{where}: {check['mask_pixels_differ_off_threshold']} mask pixels differ whose eager probability "
                f"is farther than {tol.prob_atol:g} from the threshold"
            )
    if tol.prob_rel_l2 is not None and not check["prob_rel_l2"] <= tol.prob_rel_l2:
        res.fail(f"{where}: probability relative L2 {check['prob_rel_l2']:.3e} > rtol {tol.prob_rel_l2:g}")
    if real and tol.max_mask_fraction is not None and not check["mask_differ_fraction"] <= tol.max_mask_fraction:
        res.fail(f"{where}: {check['mask_differ_fraction']:.4%} of mask pixels differ > {tol.max_mask_fraction:.4%}")
    if (
        real
        and tol.max_dice_drop is not None
        and check.get("dice_change") is not None
        and not check["dice_change"] >= -tol.max_dice_drop
    ):
        res.fail(f"{where}: mean Dice changed by {check['dice_change']:+.4f} (limit -{tol.max_dice_drop:g})")


# ---------------------------------------------------------------- verify


@dataclass
class _InputSet:
    """One set of inputs: batches (with their real-slice indices), and the eager outputs on them."""

    label: str
    batches: list[tuple[np.ndarray, list[int] | None]]
    real: bool
    eager: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return int(sum(b.shape[0] for b, _ in self.batches))


def _input_sets(
    inputs: list[np.ndarray] | None,
    real: RealSlices | None,
    *,
    raw: bool,
    check_shape: tuple[int, int, int, int],
    seed: int,
    real_batch: int,
) -> list[_InputSet]:
    """The random (or given) input batches, then the real slices grouped by shape when given."""
    dtype = np.float32 if raw else np.uint8
    if inputs is None:
        rng = np.random.default_rng(seed)
        if raw:
            inputs = [rng.uniform(-1024.0, 1500.0, size=check_shape).astype(np.float32)]
        else:
            inputs = [rng.integers(0, 256, size=check_shape, dtype=np.uint8)]
    inputs = [np.ascontiguousarray(np.asarray(x, dtype=dtype)) for x in inputs]
    for x in inputs:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"verify inputs must be [N, 1, H, W]; got {x.shape}")
    sets = [_InputSet(f"random {'x'.join(map(str, x.shape))}", [(x, None)], False) for x in inputs]
    if real is not None and real.images:
        batches: list[tuple[np.ndarray, list[int] | None]] = [
            (b.astype(dtype), idx) for b, idx in _real_batches(real, real_batch)
        ]
        shapes = sorted({f"{b.shape[2]}x{b.shape[3]}" for b, _ in batches})
        sets.append(_InputSet(f"real {len(real.images)} slices {','.join(shapes)}", batches, True))
    return sets


def _labelled_dice(
    masks: list[np.ndarray], batches: list[tuple[np.ndarray, list[int] | None]], real: RealSlices
) -> dict[int, float]:
    """Real slice index -> Dice of a [n, 1, H, W] output mask against the slice's truth, for labelled slices."""
    out: dict[int, float] = {}
    for m, (_, idx) in zip(masks, batches):
        for j, i in enumerate(idx or []):
            truth = real.masks[i]
            if truth is not None:
                out[i] = _dice(m[j, 0] > 0, truth)
    return out


def _run_set(
    runner: _Runner, s: _InputSet, res: BackendResult, thr: float, atol: float
) -> tuple[dict[str, Any], list[np.ndarray]] | None:
    """The artifact on one input set: the measured figures and its masks, or None after a recorded failure."""
    ps, ms = [], []
    t0 = time.perf_counter()
    try:
        for b, _ in s.batches:
            p, m = runner(b)
            ps.append(p)
            ms.append(m)
    except Exception as e:
        res.status = "error"
        res.failures.append(f"{s.label}: run failed: {first_line(e)}")
        return None
    secs = time.perf_counter() - t0
    try:
        p_ref, m_ref = _flat([p for p, _ in s.eager]), _flat([m for _, m in s.eager])
        check = _compare(p_ref, m_ref, _flat(ps), _flat(ms), thr, atol)
        for a, (b, _) in zip(ps, s.eager):  # shapes are compared per batch, not only in total
            if a.shape != b.shape:
                raise ValueError(f"output shape {a.shape} != eager {b.shape}")
    except ValueError as e:
        res.fail(f"{s.label}: {e}")
        return None
    return {"inputs": s.label, "n_images": s.n_images, **check, "seconds": round(secs, 3)}, ms


def _eager(pipe: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        p, m = pipe(torch.from_numpy(x))
    return p.numpy(), m.numpy()


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.reshape(-1) for a in arrays])


def _check_artifact(
    name: str,
    path: Path,
    ckpt: Checkpoint,
    sets: list[_InputSet],
    *,
    real: RealSlices | None,
    eager_dice: dict[int, float],
    thr: float,
    raw: bool,
    device: str,
    tolerances: dict[str, Tolerance],
) -> BackendResult:
    """Load one artifact, check its contract, run it on every input set and judge the figures."""
    try:
        backend, precision = _backend_of(path)
    except ContractError as e:
        r = BackendResult(name, "unknown", str(path), device, "", {})
        r.status = "error"
        r.failures.append(str(e))
        return r
    key = "torchscript" if backend == "torchscript" else f"onnx-{precision}"
    tkey = f"{key}/cuda" if device == "cuda" and f"{key}/cuda" in tolerances else key
    tol = tolerances.get(tkey, Tolerance())
    res = BackendResult(name, f"{backend} {precision}", str(path), device, tkey, asdict(tol))
    try:
        runner = _Runner(path, backend, device)
    except Exception as e:
        res.status = "error"
        res.failures.append(f"cannot load: {first_line(e)}")
        return res
    for problem in _contract_problems(runner.contract, ckpt, thr, raw):
        res.fail(problem)
    if precision == "fp16" and device == "cpu":
        res.notes.append(
            "run on onnxruntime's CPU provider, which computes float16 nodes through inserted casts: "
            "the figures show the weight rounding, not CUDA's float16 arithmetic; re-run verify with device='cuda'"
        )
    atol = tol.prob_atol if tol.prob_atol is not None else FP32_PROB_ATOL
    judged_real = False
    for s in sets:
        measured = _run_set(runner, s, res, thr, atol)
        if measured is None:
            continue
        check, masks = measured
        if s.real and real is not None and eager_dice:
            art = _labelled_dice(masks, s.batches, real)
            check["dice_eager"] = float(np.mean([eager_dice[i] for i in art]))
            check["dice_artifact"] = float(np.mean(list(art.values())))
            check["dice_change"] = check["dice_artifact"] - check["dice_eager"]
            check["n_labelled"] = len(art)
        res.checks.append(check)
        _judge(res, tol, check, s.real)
        judged_real |= s.real
    if res.status == "pass" and not tol.judge_random and not judged_real:
        res.status = "not_judged"
        res.notes.append(f"{key} is judged on real slices only and none were given")
    return res


def verify(
    ckpt: Checkpoint,
    artifacts: Mapping[str, str | Path],
    inputs: list[np.ndarray] | None = None,
    *,
    real: RealSlices | None = None,
    threshold: float | None = None,
    raw: bool = False,
    check_shape: tuple[int, int, int, int] = DEFAULT_CHECK_SHAPE,
    seed: int = 0,
    real_batch: int = 8,
    device: str = "cpu",
    tolerances: dict[str, Tolerance] | None = None,
) -> ParityReport:
    """Run the eager pipeline and each artifact on the same inputs; measure and judge the differences.

    ``artifacts`` maps a label to a file (``.pt`` TorchScript or ``.onnx``; the
    precision comes from the file's contract). ``inputs`` are [N, 1, H, W] arrays
    of the model's input dtype; by default one random batch of ``check_shape``.
    ``real`` adds real slices (uint8), judged for every backend and the only set
    judged for fp16 and int8. The eager reference always runs on the CPU in
    float32; ``device="cuda"`` runs the artifacts on the GPU.
    """
    tolerances = TOLERANCES if tolerances is None else tolerances
    thr = float(ckpt.threshold if threshold is None else threshold)
    sets = _input_sets(inputs, real, raw=raw, check_shape=check_shape, seed=seed, real_batch=real_batch)
    pipe = ckpt.build_pipeline(threshold=thr, raw=raw)
    for s in sets:
        s.eager = [_eager(pipe, b) for b, _ in s.batches]
    eager_dice: dict[int, float] = {}  # real slice index -> Dice of the eager mask against the truth
    if real is not None and sets[-1].real:
        eager_dice = _labelled_dice([m for _, m in sets[-1].eager], sets[-1].batches, real)
    results = [
        _check_artifact(
            name,
            Path(path),
            ckpt,
            sets,
            real=real,
            eager_dice=eager_dice,
            thr=thr,
            raw=raw,
            device=device,
            tolerances=tolerances,
        )
        for name, path in artifacts.items()
    ]
    described = [
        {
            "inputs": s.label,
            "n_images": s.n_images,
            "real": s.real,
            **({"source": real.source} if s.real and real is not None else {}),
        }
        for s in sets
    ]
    source = str(ckpt.path) if ckpt.path else None
    return ParityReport(
        source, thr, "eager SegmentationPipeline, CPU, float32", results, described, versions=versions()
    )


def time_backends(
    ckpt: Checkpoint,
    artifacts: Mapping[str, str | Path],
    image: np.ndarray,
    *,
    runs: int = 5,
    threshold: float | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    """Median ms per slice at batch 1 on ``image`` (uint8 [H, W]): eager and each artifact, interleaved.

    A quick check on the CPU (the benchmarks package does the proper job): one warm-up
    call each, then ``runs`` rounds in which every backend runs once.
    """
    x = np.array(image, dtype=np.float32 if raw else np.uint8)[None, None].copy()
    pipe = ckpt.build_pipeline(threshold=threshold, raw=raw)

    def eager(a: np.ndarray) -> Any:
        with torch.inference_mode():
            return pipe(torch.from_numpy(a))

    fns: dict[str, Any] = {"eager": eager}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, path in artifacts.items():
            backend, _ = _backend_of(Path(path))
            fns[name] = _Runner(Path(path), backend, "cpu")
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(2):  # warm-up: TorchScript's profiling executor optimises on the first calls
        for f in fns.values():
            f(x)
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(x)
            times[k].append((time.perf_counter() - t0) * 1000.0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out: dict[str, Any] = {
        "shape": list(x.shape),
        "runs": runs,
        "threads": torch.get_num_threads(),
        "ms_per_slice": med,
    }
    if "onnx" in med and "onnx-int8" in med and med["onnx-int8"] > 0:
        out["int8_speedup_vs_onnx_fp32"] = med["onnx"] / med["onnx-int8"]
    if "eager" in med:
        out["speedup_vs_eager"] = {k: med["eager"] / v for k, v in med.items() if v > 0 and k != "eager"}
    return out


# ---------------------------------------------------------------- engine gates


def _gate_row(engine: str, precision: str, path: Path | None) -> dict[str, Any]:
    return {"engine": engine, "precision": precision, "file": path.name if path else None, "passed": False}


def engine_gates(
    fp32_onnx: str | Path,
    real: RealSlices,
    *,
    int8_onnx: str | Path | None = None,
    rows: tuple[tuple[str, str], ...] = GATE_ROWS,
    threads: int | None = None,
    real_batch: int = 8,
) -> list[dict[str, Any]]:
    """Each engine and precision on ``real`` against ONNX Runtime fp32: the gate rows (module docstring).

    A row that cannot run (OpenVINO not installed, no int8 file) is recorded with its
    reason and does not pass. ``ran_as`` is the precision the engine actually used
    (OpenVINO runs bf16 as fp32 on a CPU without bf16 arithmetic: such a row is
    recorded but does not pass, since bf16 itself was not measured).
    """
    from liverseg.core.choose import gpu_present
    from liverseg.core.engine import cpu_class, openvino_available

    if rows == GATE_ROWS and gpu_present():  # an export on a GPU machine gates TensorRT's precisions too
        rows = (*rows, *TENSORRT_GATE_ROWS)
    klass = cpu_class()
    fp32_onnx = Path(fp32_onnx)
    int8 = Path(int8_onnx) if int8_onnx is not None else None
    batches = _real_batches(real, real_batch)
    labelled = sum(m is not None for m in real.masks)

    def outputs(engine: str, precision: str, path: Path) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
        device = "cuda" if engine == "tensorrt" else "cpu"
        eng = open_engine(path, EngineOptions(device=device, threads=threads, precision=precision), engine=engine)
        ps, ms = [], []
        for b, _ in batches:
            p, m = eng.run({INPUT_NAME: b}, ["probability", "mask"])
            ps.append(p)
            ms.append(m)
        return ps, ms, eng

    ref_p, ref_m, _ = outputs("onnxruntime", "fp32", fp32_onnx)
    ref_dice = _labelled_dice(ref_m, [(b, idx) for b, idx in batches], real)
    out = []
    for engine, precision in rows:
        path = int8 if precision == "int8" else fp32_onnx
        row = _gate_row(engine, precision, path)
        if path is None or not path.is_file():
            row["reason"] = f"no {precision} file"
        elif engine == "openvino" and not openvino_available():
            row["reason"] = "OpenVINO is not installed here: not measured"
        else:
            try:
                ps, ms, eng = outputs(engine, precision, path)
            except Exception as e:
                row["reason"] = f"run failed: {first_line(e)}"
                out.append(row)
                continue
            ran_as = str(getattr(eng, "actual_precision", precision))
            d = _compare(_flat(ref_p), _flat(ref_m), _flat(ps), _flat(ms), 0.5, FP32_PROB_ATOL)
            dice = _labelled_dice(ms, [(b, idx) for b, idx in batches], real)
            change = float(np.mean(list(dice.values())) - np.mean([ref_dice[i] for i in dice])) if dice else None
            row.update(
                ran_as=ran_as if precision != "int8" else "int8",
                engine_version=_engine_version(engine),
                n_slices=len(real.images),
                n_labelled=labelled,
                prob_max_abs=d["prob_max_abs"],
                mask_pixels_changed=d["mask_pixels_differ"],
                mask_pixels=d["mask_pixels"],
                dice_fp32=float(np.mean(list(ref_dice.values()))) if ref_dice else None,
                dice_change=change,
                cpu_class=klass,
            )
            row["passed"], row["reason"] = _gate_verdict(row, precision)
        out.append(row)
    return out


def _engine_version(engine: str) -> str:
    import importlib.metadata

    for dist in ("onnxruntime", "onnxruntime-gpu") if engine in ("onnxruntime", "tensorrt") else ("openvino",):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def _gate_verdict(row: dict[str, Any], precision: str) -> tuple[bool, str]:
    change, n = row["dice_change"], row["n_labelled"]
    what = (
        f"Dice {change:+.4f} vs ONNX Runtime fp32 on {n} labelled slices, {row['mask_pixels_changed']} of "
        f"{row['mask_pixels']} mask pixels changed"
        if change is not None
        else f"no labelled slices among {row['n_slices']}"
    )
    if n < GATE_MIN_SLICES or change is None:
        return False, f"{what}: fewer than {GATE_MIN_SLICES} labelled slices, not judged"
    if precision not in ("fp32", "int8") and row["ran_as"] != precision:
        return False, f"{what}: this CPU ran {precision} as {row['ran_as']}, so {precision} was not measured"
    if change < -GATE_MAX_DICE_DROP:
        return False, f"{what}: more than {GATE_MAX_DICE_DROP} below fp32"
    return True, f"{what}: within {GATE_MAX_DICE_DROP}"


def gates_for_contract(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The contract's ``gates``: ``"engine/precision" -> {passed, dice_change, ...}`` (read by ``auto``)."""
    keep = ("passed", "reason", "dice_change", "prob_max_abs", "mask_pixels_changed", "n_labelled", "ran_as",
            "engine_version", "cpu_class")  # fmt: skip
    # _finite: a NaN would make the contract invalid JSON for its reader (which refuses non-finite numbers)
    return {f"{r['engine']}/{r['precision']}": _finite({k: r.get(k) for k in keep}) for r in rows}


def gate_and_record(files: Mapping[str, Path], real: RealSlices | None) -> list[dict[str, Any]]:
    """Gate the exported ONNX files on ``real`` and write the result into each file's contract.

    ``files``: ``onnx`` (the fp32 file, required) and optionally ``onnx-int8`` and
    ``onnx-fp16``. Every file's contract gets ``variants`` (the siblings that exist) and
    ``gates`` (:func:`gates_for_contract` of the rows; empty without ``real`` slices),
    which is what ``liverseg-infer``'s ``auto`` reads. Returns the gate rows.
    """
    from liverseg.export.onnx import update_contract

    siblings = (("onnx-int8", "int8"), ("onnx-fp16", "fp16"))
    variants = {p: {"file": files[k].name} for k, p in siblings if k in files}
    rows = engine_gates(files["onnx"], real, int8_onnx=files.get("onnx-int8")) if real and real.images else []
    gates = gates_for_contract(rows) if rows else {}
    for key in ("onnx", "onnx-int8", "onnx-fp16"):
        if key in files:
            update_contract(files[key], variants=variants, gates=gates)
    return rows

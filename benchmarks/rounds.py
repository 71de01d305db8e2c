"""One case of the model matrix: every backend interleaved round by round, timings and parity per backend.

Per case (image size x batch) every backend runs ``warmup`` untimed calls, then
``rounds`` rounds; in each round every backend runs the same input once (A B C, then
B C A, ...: the order rotates so no backend always follows the same neighbour), timed
with ``time.perf_counter`` around ``run`` + ``sync``. Outputs are fetched outside the
timing and compared with eager's outputs of the same round (:meth:`Track.add_parity`).
A backend that fails is dropped from the later rounds; its :class:`Track` keeps the
error.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverseg.benchmarks.backends import Backend
from liverseg.core.errors import describe
from liverseg.core.metrics import image_scores

Output = tuple[np.ndarray, np.ndarray]  # (probability, mask) of one call


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return image_scores(pred.astype(bool), truth)["dice"]


@dataclass
class Track:
    """Timings and parity accumulated for one backend in one case."""

    times: list[float] = field(default_factory=list)
    max_abs: float = 0.0
    px_diff: int = 0
    px: int = 0
    dice: list[float] = field(default_factory=list)
    eager_dice: list[float] = field(default_factory=list)
    slices_seen: set[int] = field(default_factory=set)
    error: str | None = None

    def add_parity(self, name: str, out: Output, eager_out: Output | None, masks: list[Any], slices: list[int]) -> None:
        """Compare one round's output with eager's on the same slices, and both with the expert masks."""
        prob, mask = out
        if eager_out is not None and name != "eager":
            self.max_abs = max(self.max_abs, float(np.max(np.abs(prob.astype(np.float32) - eager_out[0]))))
            self.px_diff += int(np.count_nonzero(mask != eager_out[1]))
            self.px += int(mask.size)
            self.slices_seen.update(slices)
        if masks and all(m is not None for m in masks):
            self.dice.extend(_dice(mask[i, 0], m) for i, m in enumerate(masks))
            if eager_out is not None:
                self.eager_dice.extend(_dice(eager_out[1][i, 0], m) for i, m in enumerate(masks))

    def row_fields(self, batch: int, gflop: float | None) -> dict[str, Any]:
        """The result-row columns this track fills: rounds, latencies, rate, GFLOP/s, parity, Dice."""
        out: dict[str, Any] = {"error": self.error or ""}
        if self.times:
            p50 = _pct(self.times, 50)
            out.update(
                rounds=len(self.times),
                latency_ms_p50=1e3 * p50,
                latency_ms_p90=1e3 * _pct(self.times, 90),
                latency_ms_p99=1e3 * _pct(self.times, 99),
                images_per_s=batch / p50,
            )
            if gflop is not None:
                out["achieved_gflops"] = gflop * out["images_per_s"]
        if self.px:
            out.update(
                parity_max_abs_prob=self.max_abs,
                parity_mask_px_diff=self.px_diff,
                parity_px=self.px,
                parity_slices=len(self.slices_seen),
            )
        if self.dice:
            out["dice"] = float(np.mean(self.dice))
            if self.eager_dice:
                out["dice_delta"] = float(np.mean(self.dice) - np.mean(self.eager_dice))
        return out


@dataclass
class RoundLoop:
    """Runs one case over the backends that are set up; ``run`` returns a :class:`Track` per backend."""

    backends: dict[str, Backend]
    warmup: int
    rounds: int
    max_case_seconds: float | None = None
    log: Callable[[str], None] = lambda s: None
    notes: list[str] = field(default_factory=list)

    def run(self, case: Any, data: Any) -> dict[str, Track]:
        """``case`` has ``size``, ``batch`` and ``width``; ``data`` is a :class:`~liverseg.benchmarks.data.SliceSet`."""
        self.tracks = {name: Track() for name in self.backends}
        self.active = list(self.backends)
        t_case = time.perf_counter()
        # Warm-up: thread pools, arenas, oneDNN primitive caches, first-call shape inference.
        for w in range(self.warmup):
            x, _ = data.batch(w * case.batch, case.batch)
            for name in list(self.active):
                self._call(name, x, case)
        for r in range(self.rounds):
            if not self.active:
                break
            self._round(r, case, data)
            if self.max_case_seconds and time.perf_counter() - t_case > self.max_case_seconds and r + 1 >= 3:
                self.notes.append(
                    f"size {case.size} batch {case.batch} width {case.width}: stopped after {r + 1} rounds "
                    f"(--max-case-seconds {self.max_case_seconds:g})"
                )
                break
        return self.tracks

    def _round(self, r: int, case: Any, data: Any) -> None:
        """Round ``r``: every active backend once on the same slices, in rotated order, then parity."""
        start = (self.warmup + r) * case.batch
        x, masks = data.batch(start, case.batch)
        k = r % len(self.active)
        outs: dict[str, Output] = {}
        for name in self.active[k:] + self.active[:k]:  # rotate: A B C, B C A, C A B, ...
            res = self._call(name, x, case)
            if res is not None:
                self.tracks[name].times.append(res[0])
                outs[name] = res[1]
        slices = [(start + i) % len(data) for i in range(case.batch)]
        for name, out in outs.items():  # after the round: every output against eager's on the same slices
            self.tracks[name].add_parity(name, out, outs.get("eager"), masks, slices)

    def _call(self, name: str, x: np.ndarray, case: Any) -> tuple[float, Output] | None:
        """(seconds of run + sync, (prob, mask)); None after recording the error and dropping the backend."""
        b = self.backends[name]
        try:
            p = b.prepare(x)  # host->device copy for the CUDA rows; not timed
            t0 = time.perf_counter()
            out = b.run(p)
            b.sync()
            dt = time.perf_counter() - t0
            return dt, b.fetch(out)
        except Exception as e:  # out of memory, a kernel the provider lacks: the row records it
            self.tracks[name].error = describe(e)
            self.log(
                f"  {name} failed at size {case.size} batch {case.batch}: {self.tracks[name].error}\n"
                f"{traceback.format_exc(limit=4)}"
            )
            self.active.remove(name)
            return None

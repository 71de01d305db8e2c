"""What a run came to: counts, failures, metrics, timings, the exit code and the summary.

:class:`RunReport` takes every input's row in input order (:meth:`RunReport.add`) and
owns the exit code (:attr:`RunReport.return_code`) and the counting part of
summary.json (:meth:`RunReport.summary`); :func:`summary_table` is the few lines
printed at the end of a run.

Exit codes: 0 every input done, 1 some failed or were skipped (``--fail-fast``),
130 interrupted. A usage error (2) is raised before any work and never reaches a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from liverseg.core.metrics import SegmentationMetrics
from liverseg.infer.volumes import VOLUME_COLUMNS, volume_summary
from liverseg.predict.qc import flag_codes

Row = dict[str, Any]
MAX_FAILURES_LISTED = 10000  # summary.json lists this many failed inputs at most (all are in per_image.csv)


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50 / p90 / p99 rounded to 1 µs (of values in ms), or None without values."""
    if not values:
        return None
    p = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": round(float(p[0]), 3), "p90": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


def _present(value: Any) -> bool:
    return value not in (None, "")


@dataclass
class RunReport:
    """Counts, failures, metrics and latencies of one run, from its rows (black's ``Report`` is the model)."""

    n_inputs: int
    n_resumed: int = 0  # inputs finished by an earlier, interrupted run
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0, "skipped": 0})
    failures: list[dict[str, str]] = field(default_factory=list)
    metrics: SegmentationMetrics = field(default_factory=SegmentationMetrics)
    latency_ms: list[float] = field(default_factory=list)  # each ok input's share of its batch's model time
    end_to_end_ms: list[float] = field(default_factory=list)  # decode start to files written
    n_run: int = 0  # inputs that went through the model in this run
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False
    volume_rows: list[Row] = field(default_factory=list)  # the per_volume.csv columns of every volume input
    removed_voxels: int = 0  # by the cleanup (largest component, small blobs), over the volumes
    qc: dict[str, int] = field(default_factory=dict)  # quality flag -> inputs that raised it (liverseg.predict.qc)
    n_flagged: int = 0  # inputs with at least one quality flag

    # ------------------------------------------------------------ taking rows

    def add(self, row: Row) -> None:
        """One input's row (any status), in input order."""
        if row["status"] == "ok":
            self.done(row)
        else:
            self.failed(row)
        if _present(row.get("tp")):  # a failed row can still have been scored
            self.metrics.add_confusion(row["tp"], row["fp"], row["fn"], row["tn"])
        if row.get("_e2e_ms") is not None:
            self.end_to_end_ms.append(float(row["_e2e_ms"]))
        flags = flag_codes(row.get("qc_flags"))
        self.n_flagged += bool(flags)
        for flag in flags:
            self.qc[flag] = self.qc.get(flag, 0) + 1
        if row.get("kind"):  # a volume input (rows.py sets it)
            self.volume_rows.append({k: row.get(k) for k in (*VOLUME_COLUMNS, "_files")})
            if _present(row.get("removed_voxels")):
                self.removed_voxels += int(row["removed_voxels"])

    def done(self, row: Row) -> None:
        """An input whose outputs were written."""
        self.counts["ok"] += 1
        if _present(row.get("latency_ms")):
            self.latency_ms.append(float(row["latency_ms"]))

    def failed(self, row: Row) -> None:
        """An input that failed or was skipped; failures are listed with their reason."""
        status = row["status"]
        self.counts[status] = self.counts.get(status, 0) + 1
        if status == "failed" and len(self.failures) < MAX_FAILURES_LISTED:
            self.failures.append({"input": row["input"], "error": row["error"]})

    def timed(self, wall_seconds: float, model_seconds: float, n_run: int) -> None:
        """The schedule's times: all of it, and the model calls alone over ``n_run`` inputs."""
        self.wall_seconds, self.model_seconds, self.n_run = wall_seconds, model_seconds, n_run

    # ------------------------------------------------------------ results

    @property
    def return_code(self) -> int:
        """130 interrupted, 1 when any input failed or was skipped, else 0."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.counts.get("failed", 0) or self.counts.get("skipped", 0):
            return EXIT_FAILED
        return EXIT_OK

    def metrics_summary(self) -> dict[str, Any] | None:
        """``{n_images, macro: {...}, micro: {...}}`` over the labelled inputs, or None without labels."""
        if not len(self.metrics):
            return None
        m = self.metrics.compute()
        return {
            "n_images": m["n_images"],
            "macro": {k: v for k, v in m.items() if not k.startswith("micro_") and k != "n_images"},
            "micro": {k[len("micro_") :]: v for k, v in m.items() if k.startswith("micro_")},
        }

    def summary(self, about: dict[str, Any]) -> dict[str, Any]:
        """summary.json: counts, failures, metrics and speed, then ``about`` (model, device, inputs, ...)."""
        metrics = self.metrics_summary()
        ips = self.n_run / self.wall_seconds if self.n_run and self.wall_seconds > 0 else 0.0
        mips = self.n_run / self.model_seconds if self.n_run and self.model_seconds > 0 else 0.0
        return {
            "n_inputs": self.n_inputs,
            "n_ok": self.counts.get("ok", 0),
            "n_failed": self.counts.get("failed", 0),
            "n_skipped": self.counts.get("skipped", 0),
            "n_resumed": self.n_resumed,
            "n_run": self.n_run,
            "failed": self.failures,
            "metrics": metrics,
            "mPA": metrics["macro"]["mPA"] if metrics else None,
            "mIoU": metrics["macro"]["mIoU"] if metrics else None,
            "images_per_second": round(ips, 4),
            "model_images_per_second": round(mips, 4),
            "pipeline_efficiency": round(ips / mips, 4) if mips else None,
            "wall_seconds": round(self.wall_seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "latency_ms": percentiles(self.latency_ms),
            "end_to_end_latency_ms": percentiles(self.end_to_end_ms),
            "volume_metrics": volume_summary(self.volume_rows),
            "removed_voxels": self.removed_voxels,
            "qc": {"flagged_inputs": self.n_flagged, "flags": dict(sorted(self.qc.items()))},
            "volumes": [
                {k: r.get(k) for k in VOLUME_TERMINAL_KEYS}
                for r in sorted(self.volume_rows, key=lambda r: r["index"])[:MAX_VOLUMES_LISTED]
            ],
            **about,
        }


MAX_VOLUMES_LISTED = 50  # summary.json's "volumes" (per_volume.csv has them all); the terminal shows 20
VOLUME_TERMINAL_KEYS = ("input", "output", "volume_ml", "complete", "qc_flags", "dice", "hd95_mm", "assd_mm")


def _volume_line(v: dict[str, Any], out_dir: Path | None) -> str:
    """One volume's line: its mask, the liver's volume, the flags and, with a label, Dice, HD95 and ASSD."""

    def num(key: str, fmt: str) -> str | None:
        x = v.get(key)
        return None if x in (None, "") else format(float(x), fmt)

    mask = v["output"]
    where = out_dir / mask if out_dir is not None else mask
    parts = [f"volume   {where}:"]
    ml = num("volume_ml", ".0f")
    if ml is not None:
        whole = v.get("complete") in (True, "True")
        parts.append(f"liver {ml} mL" + ("" if whole or ml == "0" else " (cut by the field of view: the part inside)"))
    parts.append(f"flags {v['qc_flags'].replace(';', ', ')}" if v.get("qc_flags") else "no flags")
    dice = num("dice", ".4f")
    if dice is not None:
        hd, assd = num("hd95_mm", ".1f"), num("assd_mm", ".2f")
        parts.append(f"Dice {dice}, HD95 {hd or '-'} mm, ASSD {assd or '-'} mm")
    return parts[0] + " " + "; ".join(parts[1:])


def summary_table(s: dict[str, Any], out_dir: Path | None) -> str:
    """A few lines for the terminal at the end of a run, from its summary.json content."""
    lines = [
        f"inputs {s['n_inputs']}: ok {s['n_ok']}, failed {s['n_failed']}, skipped {s['n_skipped']}"
        + (f" (resumed {s['n_resumed']})" if s["n_resumed"] else "")
    ]
    volumes = s.get("volumes") or []
    lines += [_volume_line(v, out_dir) for v in volumes[:20] if v.get("output")]  # failed ones: under "failed"
    if len(volumes) > 20 or (s.get("volume_metrics") or {}).get("n_volumes", 0) > 20:
        lines.append("volume   ... the others in per_volume.csv and statistics.json")
    only_volumes = (s.get("volume_metrics") or {}).get("n_volumes", 0) == s["n_inputs"]
    if s["metrics"] and not only_volumes:  # per-slice macro and micro rows say nothing more for volumes
        ma, mi = s["metrics"]["macro"], s["metrics"]["micro"]
        lines.append(
            f"{'':8s} {'Dice':>7s} {'IoU':>7s} {'mPA':>7s} {'mIoU':>7s} {'prec':>7s} {'recall':>7s}"
            f"   ({s['metrics']['n_images']} labelled)"
        )
        for name, d in (("macro", ma), ("micro", mi)):
            lines.append(
                f"{name:8s} " + " ".join(f"{d[k]:7.4f}" for k in ("dice", "iou", "mPA", "mIoU", "precision", "recall"))
            )
    if s["n_run"]:
        eff = f" ({100 * s['pipeline_efficiency']:.1f}% of model-only)" if s["pipeline_efficiency"] else ""
        lat = s["latency_ms"] or {}
        p50, p99 = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
        lines.append(
            f"speed    {s['images_per_second']:.2f} img/s end-to-end, {s['model_images_per_second']:.2f} img/s "
            f"model-only{eff}; model latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    lines.append(f"device   {s['device']} ({s['provider']}), {s['threads']} threads, batch {s['batch_size']}")
    for f in s["failed"][:20]:
        lines.append(f"failed   {f['error']}")
    if len(s["failed"]) > 20:
        lines.append(f"failed   ... and {len(s['failed']) - 20} more (see per_image.csv)")
    lines.append(f"outputs  {out_dir}")
    return "\n".join(lines)

"""``report.html``: one self-contained page per inference run, findings first (docs/report.md).

:func:`write_report` reads an inference run folder (``per_image.csv``, ``per_volume.csv``,
``summary.json``, ``masks/<stem>_pred.png``, ``overlays/<key>_viewer.json``; format in the
inference runner) and writes ``report.html`` beside them. The page needs nothing but
itself: the viewer's script, style and data are inline (:mod:`liverseg.infer.viewer`),
there are no fonts or links to fetch, so it opens from the folder alone, offline.

It shows, first, a provenance banner when the model's training data or scale differs
from the inputs' (synthetic training data, another pixel size, another HU window, from
the contract's ``provenance`` and ``ct`` and the run's preprocessing); then, per volume,
the findings (the liver's volume and statistics, its quality flags, Dice/HD95/ASSD with
a label), the viewer and the per-slice profile, and the table of all volumes; for 2D
inputs the study's mPA/mIoU next to Dice/IoU/precision/recall, a histogram of per-image
Dice and the viewer over the slices, worst first (slices without liver in the truth, where
Dice says nothing, after those with liver); every failed or skipped input with its
reason; and, folded at the end, the run (model, engine, execution provider, the speed in
the input's units, what each time measures, one line on the device). Every optional part
may be missing: without labels there is no metrics section and the predicted liver is
drawn instead; a missing ``summary.json``, image, mask or viewer data is said on the page,
never an exception.

All text that came from files is escaped with :func:`html.escape`; the viewer's data is
JSON with ``<`` escaped, so nothing in it can close its script element.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg import __version__
from liverseg.core.cli import command
from liverseg.core.files import write_text_atomic
from liverseg.core.html import esc, fmt, html_page, html_table, img_tag, svg_histogram, svg_slice_profile
from liverseg.core.images import DataError, read_image, read_mask
from liverseg.core.metrics import METRIC_NAMES, scores
from liverseg.infer.inputs import PER_IMAGE_COLUMNS
from liverseg.infer.viewer import PAYLOAD_VERSION, slices_payload, viewer_assets, viewer_html
from liverseg.infer.volumes import VIEWER_SUFFIX

REPORT_NAME = "report.html"
PER_VOLUME = "per_volume.csv"
MAX_VOLUME_DETAILS = 6  # volumes shown with a slice profile and overlays (all are in the table)
N_CASES = 300  # 2D slices the viewer carries (worst first with labels)
MAX_TABLE_ROWS = 1000  # per-image rows in the page (all are in per_image.csv)


# ---------------------------------------------------------------- reading the run folder


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        s = str(value).strip()
        if not s:
            return None
        try:
            v = float(s)
        except ValueError:
            return None
    return v if math.isfinite(v) else None


def _read_summary(run_dir: Path, problems: list[str]) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.exists():
        problems.append("summary.json is missing: run details and timings are not known.")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"summary.json could not be read ({e}).")
        return {}
    if not isinstance(data, dict):
        problems.append("summary.json is not a JSON object.")
        return {}
    return data


# Numeric columns are held as floats: a run of 10,000 inputs keeps every row for the
# page, and short strings cost two to three times a float each.
_NUMERIC_COLUMNS = frozenset(PER_IMAGE_COLUMNS[PER_IMAGE_COLUMNS.index("height") :])  # height ... tn


def _compact_row(r: dict[str | None, str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in r.items():
        key = (k or "").strip()
        v = v or ""
        if key in _NUMERIC_COLUMNS and v:
            try:
                out[key] = float(v)
                continue
            except ValueError:
                pass
        out[key] = v
    return out


def _read_rows(run_dir: Path, problems: list[str], name: str = "per_image.csv") -> list[dict[str, str]]:
    """The rows of a run's table (``per_image.csv``, ``per_volume.csv``); a problem is said, never raised.

    per_image.csv is always written, so its absence is a problem; per_volume.csv only with volumes.
    """
    path = run_dir / name
    if not path.exists():
        if name == "per_image.csv":
            problems.append("per_image.csv is missing: no per-image results to show.")
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [_compact_row(r) for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{name} could not be read ({e}).")
        return []


def _find(value: str, run_dir: Path) -> Path | None:
    """A path named in the CSV: absolute, else relative to the run folder, else to the cwd."""
    value = (value or "").strip()
    if not value:
        return None
    p = Path(value)
    cands = [p] if p.is_absolute() else [run_dir / p, Path.cwd() / p, run_dir.parent / p]
    for c in cands:
        if c.is_file():
            return c
    return None


def _pred_path(row: dict[str, str], run_dir: Path) -> Path | None:
    p = _find(row.get("output", ""), run_dir)
    if p is None and row.get("input"):
        cand = run_dir / "masks" / f"{Path(row['input']).stem}_pred.png"
        p = cand if cand.is_file() else None
    return p


def _section(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """``summary[key]`` when it is a JSON object, else an empty one (a part of summary.json may be missing)."""
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def _status(row: dict[str, str]) -> str:
    return (row.get("status") or "").strip().lower() or "ok"


# ---------------------------------------------------------------- the 2D slices in the viewer


def _read_or_note(reader: Any, path: Path | None, what: str, listed: str, missing: list[str]) -> np.ndarray | None:
    """``reader(path)``, or None with the reason added to ``missing`` (a report never fails on one file)."""
    if path is None:
        missing.append(f"{what} not found" + (f" ({listed})" if listed else ""))
        return None
    try:
        return reader(path)
    except DataError as e:
        missing.append(f"{what} unreadable ({e})")
        return None


def _load_case(row: dict[str, Any], run_dir: Path, with_truth: bool) -> tuple[Any, ...] | str:
    """(gray image, prediction, truth or None) of one 2D input, or why it cannot be shown."""
    missing: list[str] = []
    image = _read_or_note(read_image, _find(row.get("input", ""), run_dir), "image", row.get("input", ""), missing)
    pred = _read_or_note(read_mask, _pred_path(row, run_dir), "prediction mask", "", missing)
    truth = None
    if with_truth and str(row.get("label") or "").strip():
        truth = _read_or_note(read_mask, _find(row.get("label", ""), run_dir), "label", row.get("label", ""), missing)
    if missing or image is None or pred is None:
        return "; ".join(missing)
    shapes = {a.shape[:2] for a in (image, pred, truth) if a is not None}
    if len(shapes) > 1:
        return f"sizes differ: {sorted(shapes)}"
    gray = image if image.ndim == 2 else image[..., 0]
    return np.asarray(gray, dtype=np.uint8), pred, truth


def _case_label(row: dict[str, Any], with_truth: bool) -> str:
    """The viewer's caption of one 2D slice: its name, its scores or its predicted liver."""
    parts = [Path(str(row.get("input", "") or "?")).name]
    if with_truth and _num(row.get("dice")) is not None:
        parts.append(f"Dice {fmt(_num(row.get('dice')))}")
        fp, fn = _num(row.get("fp")), _num(row.get("fn"))
        if fp is not None and fn is not None:
            parts.append(f"{int(fp)} false-positive, {int(fn)} false-negative pixels")
    lf = _num(row.get("liver_fraction"))
    if lf is not None:
        parts.append(f"predicted liver {100 * lf:.2f}% of the image")
    return " · ".join(parts)


def _slices_viewer(rows: list[dict[str, Any]], run_dir: Path, with_truth: bool, limit: int) -> str:
    """The viewer over up to ``limit`` of ``rows`` in their order; the inputs it cannot show are listed."""
    if not rows or limit <= 0:
        return ""
    from concurrent.futures import ThreadPoolExecutor

    chosen = rows[:limit]
    with ThreadPoolExecutor(2, thread_name_prefix="liverseg-report") as pool:  # Pillow releases the GIL
        loaded = list(pool.map(lambda r: _load_case(r, run_dir, with_truth), chosen))
    shown = [(r, c) for r, c in zip(chosen, loaded) if not isinstance(c, str)]
    problems = [f"{Path(str(r.get('input', ''))).name}: {c}" for r, c in zip(chosen, loaded) if isinstance(c, str)]
    out = []
    if shown:
        n = len(shown)
        labels = [f"{i + 1} of {n} · {_case_label(r, with_truth)}" for i, (r, _) in enumerate(shown)]
        payload = slices_payload([c[0] for _, c in shown], [c[1] for _, c in shown], [c[2] for _, c in shown], labels)
        out.append(viewer_html(payload, "lsv-slices"))
    if len(rows) > limit:
        out.append(
            f'<p class="note">The viewer holds the first {limit} of {len(rows)} slices; all are in per_image.csv.</p>'
        )
    if problems:
        out.append(
            '<p class="warn">Not shown: '
            + esc("; ".join(problems[:20]))
            + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
            + "</p>"
        )
    return "".join(out)


def _cases(figures: list[str]) -> str:
    return '<div class="cases">' + "".join(figures) + "</div>"


# ---------------------------------------------------------------- sections


def _metrics_from_rows(ok: list[dict[str, str]]) -> dict[str, dict[str, float | None]]:
    macro: dict[str, float | None] = {}
    for m in METRIC_NAMES:
        vals = [v for v in (_num(r.get(m)) for r in ok) if v is not None]
        macro[m] = float(np.mean(vals)) if vals else None
    cms = [[_num(r.get(k)) for k in ("tp", "fp", "fn", "tn")] for r in ok]
    cms = [c for c in cms if all(v is not None for v in c)]
    micro: dict[str, float | None] = dict(scores(*np.sum(np.array(cms), axis=0))) if cms else {}
    return {"macro": macro, "micro": micro}


def _lookup(d: Any, key: str) -> float | None:
    if not isinstance(d, dict):
        return None
    for k, v in d.items():
        if str(k).lower() == key.lower():
            return _num(v)
    return None


def _labels_text(inputs: dict[str, Any]) -> str | None:
    n = inputs.get("n_with_labels")
    where = inputs.get("labels") or ("from the input list" if n else None)
    if where is None:
        return "none" if n == 0 else None
    return f"{where} ({n} labelled)" if n is not None else str(where)


def _pcts(d: Any) -> str | None:
    if not isinstance(d, dict) or not d:
        return None
    return " / ".join(fmt(_num(d.get(k)), 1) for k in ("p50", "p90", "p99"))


def _explained(value: str | None, what: str) -> str | None:
    """``value (what it measures)``, or None when there is no value."""
    return f"{value} ({what})" if value else None


def _unit(vrows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """What one input of the run is: "volumes", "slices" (2D images) or "inputs" (both)."""
    if not vrows:
        return "slices"
    return "volumes" if len(rows) <= len(vrows) else "inputs"


def _speeds(summary: dict[str, Any], vrows: list[dict[str, Any]], unit: str) -> list[tuple[str, str | None]]:
    """The run's speed in its own units: inputs per second, and a volume run's axial slices per second."""
    out: list[tuple[str, str | None]] = []
    wall, model_s = _num(summary.get("wall_seconds")), _num(summary.get("model_seconds"))
    for what, key in (("end to end", "images_per_second"), ("model only", "model_images_per_second")):
        v = _num(summary.get(key))
        out.append((f"{unit} / s, {what}", fmt(v, 2) if v is not None else None))
    n_slices = sum(int(_num(r.get("n_slices")) or 0) for r in vrows if _status(r) == "ok")
    if unit == "volumes" and n_slices:
        for what, seconds in (("end to end", wall), ("model only", model_s)):
            out.append((f"axial slices / s, {what}", fmt(n_slices / seconds, 1) if seconds else None))
    return out


def _cards(summary: dict[str, Any], rows: list[dict[str, str]]) -> str:
    """The counts as cards (counted from per_image.csv when summary.json lacks them)."""
    n_in = summary.get("n_inputs", len(rows) if rows else None)
    n_ok = summary.get("n_ok", sum(_status(r) == "ok" for r in rows) if rows else None)
    n_failed = summary.get("n_failed", sum(_status(r) == "failed" for r in rows) if rows else None)
    n_skipped = summary.get("n_skipped", sum(_status(r) == "skipped" for r in rows) if rows else None)
    cards = [
        ("inputs", n_in, False),
        ("processed", n_ok, False),
        ("failed", n_failed, bool(n_failed)),
        ("skipped", n_skipped, False),
    ]
    return _card_row(cards)


def _card_row(cards: list[tuple[str, Any, bool]]) -> str:
    """(label, value, bad) as a row of cards; a bad one is marked."""
    out = ['<div class="cards">']
    for k, v, bad in cards:
        out.append(
            f'<div class="card{" bad" if bad else ""}"><div class="v">{esc(fmt(v))}</div>'
            f'<div class="k">{esc(k)}</div></div>'
        )
    out.append("</div>")
    return "".join(out)


_LOADER = re.compile(r"(lib[\w.+-]+\.so[.\d]*): cannot open shared object file[^;)]*")


def _device_line(notes: Any) -> str | None:
    """The device notes as one line: the ``device ...`` notes only, a raw loader error cut to the missing library.

    The engine choice has its own row; runs written before the notes were condensed still
    carry onnxruntime's loader message (``libonnxruntime_providers_cuda.so failed to load:
    libcublasLt.so.13: cannot open shared object file: ...``), which becomes
    ``libcublasLt.so.13 missing``.
    """
    if not notes:
        return None
    items = [str(n) for n in notes] if isinstance(notes, list) else [str(notes)]
    device = [n for n in items if n.startswith("device")] or items
    line = "; ".join(device)
    line = re.sub(r"CUDA did not load: \S+ failed to load: ", "CUDA not usable: ", line)
    line = _LOADER.sub(lambda m: f"{m.group(1)} missing", line)
    return line


def _provenance(summary: dict[str, Any], vrows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """Why the model's training data or scale may not fit these inputs (the banner's lines); empty when it fits.

    From the contract (``provenance``: the training data, ``ct``: its pixel spacing and HU
    window, ``training``: the config and data summary) and the run (``preprocessing``, the
    volumes' spacing): synthetic training data; inputs at another pixel size than the
    model's, or of unknown size; another HU window than the model's.
    """
    contract = _section(_section(summary, "model"), "contract")
    if not contract:
        return []
    out: list[str] = []
    prov, training = _section(contract, "provenance"), _section(contract, "training")
    told = json.dumps([prov, training.get("data_summary"), (training.get("config") or {})], default=str).lower()
    if "synthetic" in told:
        what = str(prov.get("data") or "synthetic CT made by liverseg's generator")
        out.append(
            f"The model was trained on synthetic data ({what}). Its masks on real CT say little about what a model "
            "trained on real scans would do: expect other organs labelled as liver."
        )
    ct = _section(contract, "ct")
    model_mm = _num(ct.get("pixel_spacing_mm"))
    prep = _section(summary, "preprocessing")
    given_mm = _num(prep.get("spacing_mm"))
    n_slices = sum(1 for r in rows if str(r.get("index", "")) not in {str(v.get("index", "")) for v in vrows})
    if model_mm is not None and n_slices and given_mm is None:
        out.append(
            f"The model was trained at {model_mm:g} mm pixels; the {n_slices} 2D input(s) have no pixel size (pass "
            "--spacing MM), so they were used at their own scale. An image at another scale than the training "
            "data's shows the liver larger or smaller than the model learned it."
        )
    vol_mm = sorted({v for v in (_num(str(r.get("spacing_mm", "")).split("x")[-1]) for r in vrows) if v is not None})
    if model_mm is None and (given_mm is not None or vol_mm):
        seen = f"{given_mm:g} mm" if given_mm is not None else ", ".join(f"{v:g}" for v in vol_mm[:5]) + " mm"
        out.append(
            f"The model records no training pixel size, so inputs at {seen} pixels were used as they are; if it was "
            "trained at another scale its masks suffer."
        )
    model_win = ct.get("window_hu")
    run_win = prep.get("window_hu")
    if isinstance(model_win, list) and isinstance(run_win, list) and len(model_win) == len(run_win) == 2:
        if any(abs(float(a) - float(b)) > 1e-6 for a, b in zip(model_win, run_win)):
            out.append(
                f"The inputs were windowed to HU [{float(run_win[0]):g}, {float(run_win[1]):g}] (--window) but the "
                f"model was trained on [{float(model_win[0]):g}, {float(model_win[1]):g}]: it sees other gray values "
                "than it learned."
            )
    return out


def _banner(lines: list[str]) -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f'<div class="banner"><b>Read these results with care.</b><ul>{items}</ul></div>'


def _run_section(summary: dict[str, Any], rows: list[dict[str, str]], vrows: list[dict[str, Any]]) -> str:
    """The engine, device and speed, folded into a details element at the end of the page."""
    lat = _section(summary, "latency_ms")
    unit = _unit(vrows, rows)
    per = unit[:-1]
    out = [_cards(summary, rows)]
    provider = summary.get("provider")
    requested = summary.get("providers_requested")
    # Only an explicit request can be contradicted: with --device auto, falling back to the
    # CPU is the documented behaviour and the device notes below say why.
    explicit = summary.get("device_requested") not in (None, "auto")
    if explicit and isinstance(requested, list) and requested and provider and str(requested[0]) != str(provider):
        out.append(
            f'<p class="warn">Asked for {esc(", ".join(map(str, requested)))} but the model ran on '
            f"<b>{esc(provider)}</b>.</p>"
        )
    model = _section(summary, "model")
    inputs = _section(summary, "inputs")
    choice = _section(summary, "engine_choice")
    engine = f"{choice['engine']} {choice.get('precision')}: {choice.get('reason')}" if choice.get("engine") else None
    kv: list[tuple[str, Any]] = [
        ("engine", engine),
        ("execution provider", provider),
        ("providers requested", ", ".join(map(str, requested)) if isinstance(requested, list) else requested),
        ("device", summary.get("device")),
        ("threads", summary.get("threads")),
        ("batch size", summary.get("batch_size")),
        *_speeds(summary, vrows, unit),
        (f"model time per {per} (ms)", _explained(_pcts(lat), "p50 / p90 / p99: its share of its batch's model call")),
        (
            f"time in the pipeline per {per} (ms)",
            _explained(
                _pcts(summary.get("end_to_end_latency_ms")),
                "p50 / p90 / p99: decode start to files written, including the wait in the decode, model and write "
                "queues; not the model's speed",
            ),
        ),
        ("wall time (s)", fmt(_num(summary.get("wall_seconds")), 2) if _num(summary.get("wall_seconds")) else None),
        ("threshold", summary.get("threshold")),
        ("model", model.get("path")),
        ("model sha256", model.get("sha256")),
        ("model trained on", _section(_section(model, "contract"), "provenance").get("data")),
        ("inputs", inputs.get("source")),
        ("labels", _labels_text(inputs)),
        ("started", summary.get("started")),
        ("finished", summary.get("finished")),
    ]
    device_line = _device_line(summary.get("device_notes"))
    if device_line:
        kv.insert(3, ("device choice", device_line))
    out.append(html_table(None, [(k, v if v not in (None, "") else "—") for k, v in kv], cls="kv"))
    cmd = summary.get("command")
    if cmd:
        out.append(f"<p>Command:</p><pre>{esc(' '.join(cmd) if isinstance(cmd, list) else cmd)}</pre>")
    extras = {k: summary[k] for k in ("versions",) if summary.get(k)}
    if model.get("contract"):
        extras["model contract"] = model["contract"]
    for k, v in extras.items():
        out.append(
            f"<details><summary>{esc(k)}</summary><pre>{esc(json.dumps(v, indent=2, default=str))}</pre></details>"
        )
    return '<details class="run"><summary><b>Run: engine, device and speed</b></summary>' + "".join(out) + "</details>"


def _metrics_section(summary: dict[str, Any], ok: list[dict[str, str]], run_dir: Path, n_cases: int) -> str:
    computed = _metrics_from_rows(ok)
    sm = _section(summary, "metrics")
    macro_src, micro_src = sm.get("macro") or computed["macro"], sm.get("micro") or computed["micro"]
    names = [
        ("mPA", "mPA (study)"),
        ("mIoU", "mIoU (study)"),
        ("dice", "Dice"),
        ("iou", "IoU"),
        ("precision", "precision"),
        ("recall", "recall"),
    ]
    rows = []
    for key, label in names:
        macro = _lookup(macro_src, key)
        if macro is None and key in ("mPA", "mIoU"):
            macro = _num(summary.get(key))
        per = [v for v in (_num(r.get(key)) for r in ok) if v is not None]
        rows.append(
            (
                label,
                fmt(macro),
                fmt(_lookup(micro_src, key)),
                fmt(float(np.median(per))) if per else "—",
                fmt(min(per)) if per else "—",
            )
        )
    out = [
        "<h2>Accuracy</h2>",
        '<p class="note">Liver is the positive class. <b>mPA</b> and <b>mIoU</b> are the study\'s metrics: the '
        "mean over the two classes (liver, background) of pixel accuracy and of IoU. The first column averages "
        "per-image scores, as the study did; the second pools all pixels of the run.</p>",
        html_table(
            ["metric", "mean per image", "pooled over all pixels", "median per image", "worst image"],
            rows,
            numeric=[False, True, True, True, True],
        ),
    ]
    dice = [v for v in (_num(r.get("dice")) for r in ok) if v is not None]
    if dice:
        svg = svg_histogram(dice, xlabel="Dice per image", bins=20, value_range=(0.0, 1.0), title="Per-image Dice")
        out.append(f"<figure>{svg}<figcaption>Per-image Dice of {len(dice)} labelled images.</figcaption></figure>")
    out.append(_cases_section(ok, run_dir, n_cases))
    return "".join(out)


def _has_liver(row: dict[str, Any]) -> bool | None:
    """True when the truth of ``row`` holds liver (tp + fn > 0), None when the row has no counts."""
    tp, fn = _num(row.get("tp")), _num(row.get("fn"))
    return None if tp is None or fn is None else tp + fn > 0


def _worst_first(ok: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int, int]:
    """(the slices in the viewer's order, how many hold liver, how many without liver have false positives, how many
    have no liver in the truth).

    Slices with liver in the truth come first, lowest Dice first; then those without liver
    that got false positives, most first; then the rest. On a slice without liver Dice is 0
    for a single false-positive pixel and 1 for an empty prediction (liverseg.core.metrics'
    rule), so such slices are not ranked by it.
    """
    scored = [r for r in ok if _num(r.get("dice")) is not None]
    with_liver = sorted(
        (r for r in scored if _has_liver(r) is not False), key=lambda r: (_num(r.get("dice")), r.get("input", ""))
    )
    empty = [r for r in scored if _has_liver(r) is False]
    fps = sorted(
        (r for r in empty if (_num(r.get("fp")) or 0) > 0),
        key=lambda r: (-(_num(r.get("fp")) or 0), r.get("input", "")),
    )
    taken = {id(r) for r in with_liver} | {id(r) for r in fps}
    rest = [r for r in ok if id(r) not in taken]
    return with_liver + fps + rest, len(with_liver), len(fps), len(empty)


def _cases_section(ok: list[dict[str, Any]], run_dir: Path, n_cases: int) -> str:
    """The labelled 2D slices in the viewer, worst first (:func:`_worst_first`)."""
    order, n_liver, n_fp, n_empty = _worst_first(ok)
    out = [f"<h3>The slices, worst first ({len(order)})</h3>"]
    about = [f"{n_liver} slices with liver in the truth come first, lowest Dice first"]
    if n_empty:
        about.append(
            f"then the {n_empty} slices without liver, the {n_fp} with false positives first (most first): one stray "
            "pixel scores Dice 0 there, so they are not ranked by it"
        )
    out.append(f'<p class="note">{esc("; ".join(about))}.</p>')
    out.append(_slices_viewer(order, run_dir, True, n_cases))
    return "".join(out)


def _unlabelled_section(ok: list[dict[str, str]], run_dir: Path, n_cases: int) -> str:
    out = [
        "<h2>Predictions</h2>",
        '<p class="note">No labels were given, so there are no accuracy metrics. The viewer shows the predicted '
        "liver over each image, in input order.</p>",
    ]
    lf = [100 * v for v in (_num(r.get("liver_fraction")) for r in ok) if v is not None]
    if lf:
        svg = svg_histogram(
            lf, xlabel="predicted liver (% of the image)", bins=20, title="Predicted liver fraction per image"
        )
        out.append(f"<figure>{svg}</figure>")
    out.append(_slices_viewer(ok, run_dir, False, n_cases))
    return "".join(out)


def _failed_section(summary: dict[str, Any], rows: list[dict[str, str]]) -> str:
    bad = [r for r in rows if _status(r) in ("failed", "skipped")]
    listed = {r.get("input", "") for r in bad}
    extra = [f for f in summary.get("failed") or [] if isinstance(f, dict) and str(f.get("input", "")) not in listed]
    out = ["<h2>Failed and skipped inputs</h2>"]
    if not bad and not extra:
        n = len(rows) or summary.get("n_inputs") or 0
        out.append(f"<p>None: all {esc(n)} inputs were processed.</p>")
        return "".join(out)
    table = [
        (r.get("index", ""), r.get("input", ""), _status(r), r.get("error", "") or "(no reason given)") for r in bad
    ]
    table += [("", f.get("input", ""), "failed", f.get("error", "") or "(no reason given)") for f in extra]
    classes = [_status(r) for r in bad] + ["failed"] * len(extra)
    out.append(f"<p>{len(table)} input(s) gave no prediction; each reason is as the runner recorded it.</p>")
    out.append(html_table(["#", "input", "status", "reason"], table, row_classes=classes))
    return "".join(out)


def _per_image_section(rows: list[dict[str, str]], with_truth: bool) -> str:
    if not rows:
        return ""
    cols = ["index", "input", "status", "size", "latency ms", "liver %"]
    if with_truth:
        cols += ["Dice", "IoU", "mPA", "mIoU"]
    table, classes = [], []
    for r in rows[:MAX_TABLE_ROWS]:
        h, w = _num(r.get("height")), _num(r.get("width"))
        lf = _num(r.get("liver_fraction"))
        lat = _num(r.get("latency_ms"))
        cells = [
            r.get("index", ""),
            Path(r.get("input", "")).name or r.get("input", ""),
            _status(r),
            f"{int(w)}x{int(h)}" if h is not None and w is not None else "—",
            fmt(lat, 1) if lat is not None else "—",
            fmt(100 * lf, 2) if lf is not None else "—",
        ]
        if with_truth:
            cells += [fmt(_num(r.get(k))) for k in ("dice", "iou", "mPA", "mIoU")]
        table.append(cells)
        classes.append(_status(r) if _status(r) != "ok" else "")
    numeric = [True, False, False, False, True, True] + [True] * (4 if with_truth else 0)
    more = (
        f'<p class="note">The first {MAX_TABLE_ROWS} of {len(rows)} rows; all are in per_image.csv.</p>'
        if len(rows) > MAX_TABLE_ROWS
        else ""
    )
    return (
        f"<details><summary><b>Per-image results ({len(rows)} rows)</b></summary>{more}"
        f"{html_table(cols, table, numeric=numeric, row_classes=classes)}</details>"
    )


# ---------------------------------------------------------------- volumes


def _volume_key(row: dict[str, Any]) -> str | None:
    """The name a volume's outputs share: ``masks/<key>.nii.gz`` -> ``<key>``."""
    out = str(row.get("output") or "")
    if not out.endswith(".nii.gz"):
        return None
    return out.removesuffix(".nii.gz").split("/", 1)[-1]


def _slice_profile(run_dir: Path, key: str, name: str) -> str:
    """The per-slice chart of one volume from ``slices/<key>.csv``, or a note why not."""
    path = run_dir / "slices" / f"{key}.csv"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return f'<p class="note">{esc(name)}: no slice table ({esc(str(e))})</p>'
    pos = [_num(r.get("position_mm")) or 0.0 for r in table]
    pred = [_num(r.get("pred_pixels")) or 0.0 for r in table]
    labelled = any((r.get("true_pixels") or "") != "" for r in table)
    true = [_num(r.get("true_pixels")) or 0.0 for r in table] if labelled else None
    dice = [_num(r.get("dice")) for r in table] if labelled else None
    svg = svg_slice_profile(pos, pred, true, dice, title=name)
    return f"<figure>{svg}<figcaption>{esc(name)}: liver pixels and Dice per slice</figcaption></figure>"


def _volume_overlays(run_dir: Path, key: str, name: str) -> str:
    """The still overlays of a run folder written before the viewer (no ``<key>_viewer.json``), with a note."""
    files = sorted((run_dir / "overlays").glob(f"{key}_axial_*.png")) + sorted(
        (run_dir / "overlays").glob(f"{key}_coronal.png")
    )
    cells = []
    for f in files:
        try:
            png = f.read_bytes()
        except OSError:
            continue
        what = "coronal" if f.stem.endswith("_coronal") else "axial slice " + f.stem.rsplit("_", 1)[-1].lstrip("0")
        cells.append(f"<figure>{img_tag(png, f'{name}: {what}')}<figcaption>{esc(what)}</figcaption></figure>")
    note = (
        f'<p class="note">{esc(name)}: this run folder holds no viewer data ({esc(key + VIEWER_SUFFIX)}); it was '
        "written by an earlier liverseg. Run the inference again to scroll through the volume here.</p>"
    )
    return note + (_cases(cells) if cells else "")


def _volume_viewer(run_dir: Path, key: str, name: str, dom_id: str) -> str:
    """The viewer of one volume from ``overlays/<key>_viewer.json``, or the still overlays and why."""
    path = run_dir / "overlays" / f"{key}{VIEWER_SUFFIX}"
    if not path.is_file():
        return _volume_overlays(run_dir, key, name)
    try:
        payload = json.loads(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f'<p class="warn">{esc(name)}: the viewer data could not be read ({esc(str(e))}).</p>'
    if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
        return f'<p class="warn">{esc(name)}: the viewer data is of another version; run the inference again.</p>'
    return viewer_html(payload, dom_id)


# What each quality flag asks of the reader (rules: liverseg.predict.qc, docs/quality.md).
FLAG_TEXT = {
    "no_liver": "no liver found: right for a neck or a pelvis, wrong for an abdomen",
    "partial_fov": "the liver is cut by the field of view: its volume is that of the part inside",
    "implausible_volume": "a whole liver outside the adult range of 600-4,000 mL",
    "fragmented": "more than 10 mL of the model's mask lay outside the region kept",
    "wrong_side": "the input looks mirrored left-right (or situs inversus): check the R/L markers against the anatomy",
    "unstable": "the prediction disagrees with itself turned upside down: the model is unsure here",
    "spacing_assumed": "the voxel size was assumed: mL and mm rest on that",
    "intensity_assumed": "the stored values were not read as HU",
}


def _flags_html(flags: str) -> str:
    codes = [f for f in flags.replace(",", ";").split(";") if f.strip()]
    if not codes:
        return "<p>Quality flags: none raised.</p>"
    items = "".join(
        f'<li><span class="flag">{esc(c.strip())}</span>{esc(FLAG_TEXT.get(c.strip(), ""))}</li>' for c in codes
    )
    return f"<p>Quality flags (see docs/quality.md):</p><ul>{items}</ul>"


def _findings(r: dict[str, Any]) -> str:
    """One volume's findings: the liver's volume and statistics, its flags, the metrics against its label."""
    ml, true_ml = _num(r.get("volume_ml")), _num(r.get("volume_ml_true"))
    complete = str(r.get("complete") or "").strip().lower()
    what = "liver volume" if complete != "false" else "liver volume (the part inside the field of view)"
    cards = [(what, f"{fmt(ml, 1)} mL" if ml is not None else None)]
    if _num(r.get("dice")) is not None:
        cards += [
            ("Dice", fmt(_num(r.get("dice")))),
            ("HD95", f"{fmt(_num(r.get('hd95_mm')), 2)} mm"),
            ("ASSD", f"{fmt(_num(r.get('assd_mm')), 2)} mm"),
            ("true liver volume", f"{fmt(true_ml, 1)} mL" if true_ml is not None else None),
        ]
    out = [_card_row([(k, v, False) for k, v in cards])]
    out.append(_flags_html(str(r.get("qc_flags") or "")))
    hu = [_num(r.get(k)) for k in ("hu_mean", "hu_median", "hu_std")]
    stats = [
        (
            "CT numbers in the mask (HU)",
            None if hu[0] is None else f"mean {fmt(hu[0], 1)}, median {fmt(hu[1], 1)}, SD {fmt(hu[2], 1)}",
        ),
        ("craniocaudal extent", f"{fmt(_num(r.get('extent_cc_mm')), 1)} mm" if _num(r.get("extent_cc_mm")) else None),
        ("bounding box (RAS+ mm, min / max)", _bbox_text(str(r.get("bbox_ras_mm") or ""))),
        ("NSD at 2 mm", fmt(_num(r.get("nsd_2mm"))) if _num(r.get("nsd_2mm")) is not None else None),
        ("shape, spacing", f"{r.get('shape', '')} voxels of {r.get('spacing_mm', '')} mm"),
        ("notes", str(r.get("notes") or "") or None),
    ]
    rows = [(k, v) for k, v in stats if v]
    if rows:
        out.append(html_table(None, rows, cls="kv"))
    return "".join(out)


def _bbox_text(value: str) -> str | None:
    v = [_num(x) for x in value.split()]
    if len(v) != 6 or any(x is None for x in v):
        return None
    return " ".join(fmt(x, 1) for x in v[:3]) + " / " + " ".join(fmt(x, 1) for x in v[3:])


def _volume_section(vrows: list[dict[str, Any]], summary: dict[str, Any], run_dir: Path) -> str:
    """Each volume's findings and viewer first (flagged volumes first), then the table of all volumes.

    Volumes with quality flags (:mod:`liverseg.predict.qc`) come first, in input order, then the others;
    the first :data:`MAX_VOLUME_DETAILS` get their findings, viewer and slice profile.
    """
    if not vrows:
        return ""
    vrows = sorted(vrows, key=lambda r: not r.get("qc_flags"))
    agg = _section(summary, "volume_metrics")
    parts = []
    shown = 0
    for r in vrows:
        key = _volume_key(r)
        if key is None or r.get("error") or shown >= MAX_VOLUME_DETAILS:
            continue
        name = Path(str(r.get("input", ""))).name
        parts.append(f'<h2 class="volume">{esc(name)}</h2>')
        parts.append(_findings(r))
        parts.append(_volume_viewer(run_dir, key, name, f"lsv-volume-{shown}"))
        parts.append(_slice_profile(run_dir, key, name))
        shown += 1
    if shown < sum(1 for r in vrows if not r.get("error")):
        parts.append(f'<p class="note">Details of the first {MAX_VOLUME_DETAILS} volumes; all are in {PER_VOLUME}.</p>')
    parts.append(f"<h2>Volumes ({len(vrows)})</h2>")
    if agg.get("rules"):
        parts.append(f'<p class="note">{esc(agg["rules"])}</p>')
    cols = ["input", "status", "flags", "shape", "spacing mm", "Dice", "IoU", "HD95 mm", "ASSD mm", "NSD 2 mm"]
    cols += ["liver mL", "true mL", "notes"]
    table, classes = [], []
    for r in vrows:
        status = _status(r) if not r.get("error") else "failed"
        table.append(
            [Path(str(r.get("input", ""))).name, status, str(r.get("qc_flags") or "").replace(";", ", ")]
            + [r.get("shape", ""), r.get("spacing_mm", "")]
            + [fmt(_num(r.get(k))) for k in ("dice", "iou")]
            + [fmt(_num(r.get(k)), 2) for k in ("hd95_mm", "assd_mm")]
            + [fmt(_num(r.get("nsd_2mm")))]
            + [fmt(_num(r.get(k)), 1) for k in ("volume_ml", "volume_ml_true")]
            + [str(r.get("error") or r.get("notes") or "")]
        )
        classes.append("" if status == "ok" else status)
    numeric = [False] * 5 + [True] * 7 + [False]
    parts.append(html_table(cols, table, numeric=numeric, row_classes=classes))
    return "\n".join(parts)


# ---------------------------------------------------------------- entry points


def write_report(run_dir: str | os.PathLike, *, n_cases: int = N_CASES, out_name: str = REPORT_NAME) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    problems: list[str] = []
    summary = _read_summary(run_dir, problems)
    rows = _read_rows(run_dir, problems)
    vrows: list[dict[str, Any]] = list(_read_rows(run_dir, problems, PER_VOLUME))
    volume_index = {str(r.get("index", "")) for r in vrows}
    slices = [r for r in rows if str(r.get("index", "")) not in volume_index]  # 2D inputs
    ok = [r for r in slices if _status(r) == "ok"]
    with_truth = any(_num(r.get("dice")) is not None for r in ok) or (bool(summary.get("metrics")) and not vrows)
    body = [
        f'<h1>liverseg inference report</h1><p class="sub">Run folder <code>{esc(run_dir.resolve().name)}</code></p>'
    ]
    body.append(_banner(_provenance(summary, vrows, rows)))
    body += [f'<p class="warn">{esc(p)}</p>' for p in problems]
    body.append(_volume_section(vrows, summary, run_dir))
    if with_truth:
        body.append(_metrics_section(summary, ok, run_dir, n_cases))
    elif ok or not vrows:
        body.append(_unlabelled_section(ok, run_dir, n_cases))
    body.append(_failed_section(summary, rows))
    body.append(_per_image_section(rows, with_truth))
    body.append(_run_section(summary, rows, vrows))
    if 'class="lsv"' in "".join(body):
        body.append(viewer_assets())
    body.append(
        f"<footer>Written by liverseg {esc(__version__)} on "
        f"{esc(datetime.now().astimezone().isoformat(timespec='seconds'))} from per_image.csv, "
        "summary.json and the mask files in this folder.</footer>"
    )
    return write_text_atomic(
        run_dir / out_name, html_page(f"liverseg report: {run_dir.resolve().name}", "\n".join(body))
    )


@command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--cases",
    "n_cases",
    type=click.IntRange(0, 5000),
    default=N_CASES,
    show_default=True,
    help="How many 2D slices the viewer holds (worst first with labels).",
)
def main(run_dir: Path, n_cases: int) -> None:
    """(Re)write RUN_DIR/report.html from an inference run folder."""
    path = write_report(run_dir, n_cases=n_cases)
    click.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    main()


def cautions(run_dir: str | os.PathLike) -> list[str]:
    """The report's "read these results with care" lines for a finished run folder (the terminal prints them too)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    rows = _read_rows(run_dir, problems)
    vrows: list[dict[str, Any]] = list(_read_rows(run_dir, problems, PER_VOLUME))
    return _provenance(_read_summary(run_dir, problems), vrows, rows)

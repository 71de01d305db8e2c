"""The hostile run: ``liverseg-infer`` on a big folder with broken and odd entries, kills, resumes and a lock.

``python -m liverseg.benchmarks.hostile [--n 10000]`` makes, under ``--out``:

* ``data/``: ``--n`` small synthetic slices (an ellipse "liver" in a body on air), plus
  every broken entry the hardening issue names (empty, truncated, text, corrupt,
  decompression bombs of 17000^2 and 40000^2 declared pixels, an unsupported mode,
  float data without air, a broken link, a link loop, a FIFO, a folder named like an
  image) and odd but valid ones (1x1, 1x300, 2100x2100 over the model's per-call limit,
  16-bit gray, 16-bit HU+1024, RGBA, palette, CMYK JPEG, a multi-page TIFF, unicode
  and newline names, the same stem twice), an orphan ``*_mask.png`` and a text file;
* a width-``--width`` U-Net with seeded random weights, exported to ONNX.

Then it runs, each in a fresh interpreter (peak memory = the child's own VmHWM):

1. a clean run to ``runs/clean`` (and one of the first 100 inputs: memory must stay flat);
2. a run whose ``--out`` lies *inside* the input folder, SIGKILLed after 30% of the
   inputs; meanwhile a second run on that folder must be refused (the lock); then
   ``--resume``, SIGTERMed after 60% (exit 130); then ``--resume`` to the end;
3. checks: every good input ``ok`` with a mask of its own size, byte-identical to the
   clean run's; every broken one ``failed`` with its reason; the orphan mask and the
   text file listed as ignored with theirs; no traceback on stderr; no earlier output
   read back as input.

Figures and checks go to ``OUT/hostile.json`` (with the machine stamp); the exit code is
1 when a check failed.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
from PIL import Image

from liverseg.benchmarks.machine import run_cli, stamp, start_cli
from liverseg.core.cli import command
from liverseg.infer.runner import DELAY_ENV

INFER = ("liverseg.infer.cli", "liverseg-infer")


# ---------------------------------------------------------------- inputs


def _png(path: Path, arr: np.ndarray, **kw: Any) -> None:
    Image.fromarray(arr).save(path, **kw)


def _good(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    body = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.46) ** 2 < 1
    cy, cx, r = rng.uniform(0.35, 0.55), rng.uniform(0.3, 0.5), rng.uniform(0.1, 0.2)
    liver = ((yy - cy) / r) ** 2 + ((xx - cx) / (1.3 * r)) ** 2 < 1
    img = np.where(body, 40, 0) + np.where(liver, 80, 0) + rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _bomb(path: Path, side: int) -> None:
    """A valid 1x1 PNG whose header declares side x side pixels."""
    _png(path, np.zeros((1, 1), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def make_inputs(data: Path, n: int, size: int) -> tuple[dict[str, str], dict[str, str | None], dict[str, str]]:
    """Write the folder; (broken name -> word its error must hold, odd valid name -> word its notes must hold
    or None, ignored name -> word its reason must hold)."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(data / f"slice_{i:05d}.png", _good(rng, size), compress_level=1)
    ok_png = data / "slice_00000.png"
    raw = ok_png.read_bytes()
    (data / "zero.png").write_bytes(b"")
    (data / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (data / "text.png").write_text("this is not an image\n")
    corrupt = bytearray(raw)
    corrupt[40:60] = b"\x00" * 20
    (data / "corrupt.png").write_bytes(bytes(corrupt))
    _bomb(data / "bomb17k.png", 17000)
    _bomb(data / "bomb40k.png", 40000)
    Image.new("LAB", (32, 32)).save(data / "lab.tif")
    Image.fromarray(np.full((32, 32), 50.0, np.float32)).save(data / "float_no_air.tif")
    (data / "broken.png").symlink_to(data / "nowhere.png")
    (data / "loop.png").symlink_to(data / "loop.png")
    os.mkfifo(data / "pipe.png")
    (data / "folder.png").mkdir()
    broken = {
        "zero.png": "empty",
        "truncated.png": "truncated",
        "text.png": "not a readable image",
        "corrupt.png": "corrupt",
        "bomb17k.png": "before decoding",
        "bomb40k.png": "before decoding",
        "lab.tif": "unsupported image mode",
        "float_no_air.tif": "cannot tell what its values are",
        "broken.png": "broken symbolic link",
        "loop.png": "symbolic link loop",
        "pipe.png": "FIFO",
        "folder.png": "is a folder",
    }
    g = _good(rng, 64)
    _png(data / "one_pixel.png", np.full((1, 1), 100, np.uint8))
    _png(data / "thin.png", np.full((300, 1), 100, np.uint8))
    _png(data / "big.png", np.kron(_good(rng, 100), np.ones((21, 21), np.uint8)))
    _png(data / "gray16.png", (g.astype(np.uint16) * 257))  # a genuine 16-bit gray image (values above 4095)
    _png(data / "hu1024.tif", (g.astype(np.uint16) + 1024))  # CT numbers stored as HU + 1024
    Image.fromarray(g).convert("RGBA").save(data / "rgba.png")
    Image.fromarray(g).convert("P").save(data / "palette.png")
    Image.fromarray(g).convert("CMYK").save(data / "cmyk.jpg")
    pages = [Image.fromarray(g), Image.fromarray(255 - g)]
    pages[0].save(data / "pages.tif", save_all=True, append_images=pages[1:])
    _png(data / "unicodé ñame.png", g)
    _png(data / "new\nline.png", g)
    _png(data / "dup.png", g)
    Image.fromarray(g).save(data / "dup.jpg", quality=95)
    odd: dict[str, str | None] = {
        "one_pixel.png": None,
        "thin.png": None,
        "big.png": "larger than the model takes in one call",
        "gray16.png": None,
        "hu1024.tif": None,
        "rgba.png": None,
        "palette.png": None,
        "cmyk.jpg": None,
        "pages.tif": "2 pages",
        "unicodé ñame.png": None,
        "new\nline.png": None,
        "dup.png": None,
        "dup.jpg": None,
    }
    _png(data / "orphan_mask.png", np.zeros((8, 8), np.uint8))
    (data / "notes.txt").write_text("not an input\n")
    ignored = {"orphan_mask.png": "a mask with no image", "notes.txt": "no image extension"}
    return broken, odd, ignored


def export_model(path: Path, width: int) -> Path:
    from liverseg.benchmarks.artifacts import random_checkpoint
    from liverseg.export.onnx import export_onnx

    return Path(export_onnx(random_checkpoint("unet", width), path, example_shape=(1, 1, 64, 64)))


# ---------------------------------------------------------------- runs


def _journal_lines(out: Path) -> int:
    try:
        with open(out / "journal.jsonl", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _run_until(args: list[str], out: Path, stop_at: int, sig: int, hwm: Path) -> tuple[int, str]:
    """Start a run, send ``sig`` once its journal has ``stop_at`` rows (or it ends); (exit code, stderr)."""
    proc = start_cli(*INFER, args, hwm, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_paced())
    while proc.poll() is None and _journal_lines(out) < stop_at:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate()
    return proc.returncode, err.decode(errors="replace")


def _paced() -> dict[str, str]:
    """The environment of a run that is to be interrupted: 2 ms per batch, so that the kill, the rival
    run and SIGTERM meet it running whatever --n and the machine's speed."""
    return {**os.environ, DELAY_ENV: "0.002"}


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "per_image.csv", dtype=str, keep_default_na=False)


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def __call__(self, name: str, ok: bool, detail: Any = "") -> None:
        self.results.append({"check": name, "ok": bool(ok), "detail": str(detail)[:500]})
        click.echo(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail and not ok else ""))

    @property
    def failed(self) -> int:
        return sum(not r["ok"] for r in self.results)


def check_rows(check: Checks, rows: pd.DataFrame, broken: dict, odd: dict, n_good: int, data: Path) -> None:
    by = {Path(r["input"]).name: r for _, r in rows.iterrows()}
    good = [by.get(f"slice_{i:05d}.png") for i in range(n_good)]
    bad_good = [i for i, g in enumerate(good) if g is None or g["status"] != "ok"]
    check("every good slice ok", not bad_good, bad_good[:5])
    wrong = {
        k: by[k]["error"] if k in by else "missing" for k, w in broken.items() if k not in by or w not in by[k]["error"]
    }
    check("every broken entry failed with its reason", not wrong, wrong)
    odd_bad = {}
    for name, note in odd.items():
        r = by.get(name)
        if r is None or r["status"] != "ok":
            odd_bad[name] = "missing" if r is None else r["error"]
            continue
        with Image.open(data / name) as im:
            w, h = im.size
        if (int(r["height"]), int(r["width"])) != (h, w):
            odd_bad[name] = f"mask {r['width']}x{r['height']} for a {w}x{h} input"
        if note and note not in r["notes"]:
            odd_bad[name] = f"notes {r['notes']!r} lack {note!r}"
    check("every odd but valid entry ok, mask of its size, notes said", not odd_bad, odd_bad)
    check("no output read back as input", not any("_pred" in n for n in by), [n for n in by if "_pred" in n][:3])


@command()
@click.option("--n", "n_good", type=click.IntRange(min=10), default=10_000, show_default=True, help="Good slices.")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=4, show_default=True, help="U-Net width.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/hostile"), show_default=True
)
def main(n_good: int, size: int, width: int, out: Path) -> None:
    """Run liverseg-infer as a hostile, careless user would, and check every expectation."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data = out / "data"
    t0 = time.perf_counter()
    broken, odd, ignored = make_inputs(data, n_good, size)
    model = export_model(out / "model.onnx", width)
    n_inputs = n_good + len(broken) + len(odd)
    click.echo(f"made {n_inputs} inputs ({len(broken)} broken, {len(odd)} odd) in {time.perf_counter() - t0:.1f} s")
    check = Checks()
    figures: dict[str, Any] = {"n_inputs": n_inputs, "n_broken": len(broken), "n_odd": len(odd)}
    base = ["--model", str(model), "--device", "cpu", "--no-progress", "--no-report"]

    clean = out / "clean"
    code, wall, peak, err = run_cli(*INFER, [str(data), "--out", str(clean), *base], out / ".hwm")
    figures.update(clean_exit=code, clean_seconds=round(wall, 1), clean_peak_mb=round(peak, 1))
    figures["clean_inputs_per_s"] = round(n_inputs / wall, 1)
    check("clean run exits 1 (some inputs failed)", code == 1, code)
    check("no traceback on stderr (clean run)", "Traceback" not in err and "\x1b[" not in err, err[-300:])
    rows = _rows(clean)
    check("clean run lists every input", len(rows) == n_inputs, len(rows))
    check_rows(check, rows, broken, odd, n_good, data)
    listed = json.loads((clean / "summary.json").read_text())["inputs"]["ignored_examples"]
    miss = {k: w for k, w in ignored.items() if not any(k in e and w in e for e in listed)}
    check("orphan mask and text file listed as ignored with a reason", not miss, listed)
    # memory against the number of inputs, on the good slices alone (big.png alone sets the folder's peak)
    good_csv = out / "good_x.csv"
    good_csv.write_text("X\n" + "".join(f"{(data / f'slice_{i:05d}.png').resolve()}\n" for i in range(n_good)))
    peaks = {}
    for n in (100, n_good):
        lim = ["--limit", str(n)]
        _, _, peaks[n], _ = run_cli(*INFER, [str(good_csv), "--out", str(out / f"good{n}"), *lim, *base], out / ".hwm")
    figures.update(peak_mb_100_good=round(peaks[100], 1), peak_mb_all_good=round(peaks[n_good], 1))
    check(
        f"memory flat: {n_good} good inputs within 15% of 100",
        peaks[n_good] <= 1.15 * peaks[100],
        f"{peaks[n_good]:.0f} vs {peaks[100]:.0f} MB",
    )

    inner = data / "predictions"  # --out inside the input folder
    args = [str(data), "--out", str(inner), *base]
    code, err = _run_until(args, inner, int(0.3 * n_inputs), signal.SIGKILL, out / ".hwm")
    figures["killed_exit"] = code
    check("SIGKILL leaves a journal to resume", code == -signal.SIGKILL and _journal_lines(inner) > 0, code)
    proc = start_cli(
        *INFER, [*args, "--resume"], out / ".hwm", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_paced()
    )
    while proc.poll() is None and _journal_lines(inner) < int(0.45 * n_inputs):
        time.sleep(0.05)
    rival = subprocess.run(
        [*_python(), *args, "--resume"], capture_output=True, text=True, timeout=600, check=False
    )  # a second run on the folder in use
    check(
        "a second run on a folder in use is refused, naming the holder",
        rival.returncode == 2 and "in use by another liverseg-infer run (process" in rival.stderr,
        (rival.returncode, rival.stderr[-300:]),
    )
    while proc.poll() is None and _journal_lines(inner) < int(0.6 * n_inputs):
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    figures["sigterm_exit"] = proc.returncode
    check(
        "SIGTERM ends with 130 and a resume hint",
        proc.returncode == 130 and "--resume" in err.decode(),
        proc.returncode,
    )
    code, wall, peak, err = run_cli(*INFER, [*args, "--resume"], out / ".hwm")
    figures.update(resume_exit=code, resume_seconds=round(wall, 1), resume_peak_mb=round(peak, 1))
    check("the last --resume finishes (exit 1: the broken inputs)", code == 1, (code, err[-300:]))
    check("no traceback on stderr (resume)", "Traceback" not in err and "\x1b[" not in err, err[-300:])
    rows2 = _rows(inner)
    check_rows(check, rows2, broken, odd, n_good, data)
    summary = json.loads((inner / "summary.json").read_text())
    figures["resumed_inputs"] = summary["n_resumed"]
    a = {r["input"]: r["output"] for _, r in rows.iterrows() if r["status"] == "ok"}
    b = {r["input"]: r["output"] for _, r in rows2.iterrows() if r["status"] == "ok"}
    differ = [k for k in a if k not in b or (clean / a[k]).read_bytes() != (inner / b[k]).read_bytes()]
    check(
        "killed, terminated and resumed run gives byte-identical masks", not differ and a.keys() == b.keys(), differ[:3]
    )

    result = {**stamp(), "figures": figures, "checks": check.results, "n_failed_checks": check.failed}
    (out / "hostile.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    click.echo(json.dumps(figures, indent=1))
    click.echo(f"{len(check.results) - check.failed} of {len(check.results)} checks passed; {out / 'hostile.json'}")
    raise SystemExit(1 if check.failed else 0)


def _python() -> list[str]:
    import sys

    return [
        sys.executable,
        "-c",
        "import sys; from liverseg.infer.cli import main; sys.argv[0] = 'liverseg-infer'; main()",
    ]


if __name__ == "__main__":  # pragma: no cover
    main()

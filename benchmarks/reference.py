"""How well a model does on the real data in ``../shared/data``: the reference model's numbers.

``python -m liverseg.benchmarks.reference --model M.onnx --split DIR --out result.json``

Every row runs the model file through liverseg's own session (the engine and precision
``liverseg-infer`` would use, or the ones asked for), on slices read the way
``liverseg-infer`` reads them, and scores the masks against the expert masks:

* ``msd-val``: the held-out validation patients of ``msd-liver-256`` (``--split``: the
  ``val_x.csv``/``val_y.csv`` that ``liverseg-split --group-by volume_idx`` wrote);
  ``msd-test``: its test patients, never used to choose anything.
  ``dice_pooled_per_patient``: all slices of a patient pooled, then averaged over
  patients; ``dice_macro``: per slice, averaged over slices with liver; ``dice_micro``:
  all pixels pooled.
* robustness rows on the same slices, each compared with ``msd-val``: the image
  re-windowed so the mean liver gray sits near 60 or near 170 (a linear map, clipped to
  0..255), the background made gray, the image upside down (the study's storage; the
  mask is flipped back before scoring), and the image at other pixel sizes: upscaled
  to 384 and 512 pixels (about 1 and 0.75 mm), and shrunk by 3/4 into a 256-pixel
  frame of air (about 2 mm).
* ``chaos``: ``chaos-ct-case`` at 512x512 as given (another dataset, scanner and pixel
  size: never trained on): pooled Dice over its 78 slices, macro over the 71 with
  liver; and on its 7 slices without liver the predicted liver area in percent of the
  image (the target: under 0.5% on at least 95% of them).
* ``lits-117``: the LiTS volume (HU windowed to the model's window), each axial slice.
* ``scans``: whole CT volumes and other windows, run as ``liverseg-infer`` runs them
  (:mod:`liverseg.benchmarks.scans`): the head-and-neck CT without liver, the pelvis of
  the abdomen-pelvis CT, ``ircadb-17`` in 3D, the CHAOS DICOM series, and ``ircadb-17``'s
  slices as 8-bit images in other windows. Left out with ``--no-scans`` and for
  ``--checkpoint``.

The slices are run in batches of equal size; the numbers are deterministic for a
given model file, engine and precision.

``--checkpoint C.pt [--device cuda]`` scores a training checkpoint directly with its
PyTorch pipeline (the graph ``liverseg-export`` would write: the same preprocessing,
threshold and resizing), fp32, without exporting it first: how the widths compared on
a GPU were scored on it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from liverseg.benchmarks.machine import stamp
from liverseg.core.files import write_text_atomic
from liverseg.core.images import read_image, read_mask
from liverseg.core.metrics import confusion, scores
from liverseg.predict.model import ModelSession, open_session

__all__ = ["CheckpointSession", "Slice", "dice", "evaluate", "main"]

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
NO_LIVER_MAX_PERCENT = 0.5  # the bar for a slice without liver


@dataclass
class Slice:
    image: np.ndarray  # uint8 [H, W]
    mask: np.ndarray  # bool [H, W]
    group: str  # patient


@dataclass
class Scores:
    """Confusion sums per slice, kept so any pooling can be computed."""

    tp: list[int] = field(default_factory=list)
    fp: list[int] = field(default_factory=list)
    fn: list[int] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)
    pred_fraction: list[float] = field(default_factory=list)
    group: list[str] = field(default_factory=list)

    def add(self, pred: np.ndarray, truth: np.ndarray, group: str) -> None:
        tp, fp, fn, _ = confusion(pred, truth)
        self.tp.append(tp)
        self.fp.append(fp)
        self.fn.append(fn)
        self.truth.append(tp + fn)
        self.pred_fraction.append((tp + fp) / pred.size)
        self.group.append(group)

    def summary(self) -> dict[str, Any]:
        df = pd.DataFrame(
            {"tp": self.tp, "fp": self.fp, "fn": self.fn, "truth": self.truth, "group": self.group}
        ).assign(pred_pct=[100 * f for f in self.pred_fraction])
        liver = df[df.truth > 0]
        empty = df[df.truth == 0]
        per_patient = liver.groupby("group")[["tp", "fp", "fn"]].sum()
        out: dict[str, Any] = {
            "slices": len(df),
            "slices_with_liver": len(liver),
            "patients": int(per_patient.shape[0]),
            "dice_pooled_per_patient": _mean(_dices(per_patient)),
            "dice_macro": _mean(_dices(liver)),
            "dice_micro": dice(int(df.tp.sum()), int(df.fp.sum()), int(df.fn.sum())),
        }
        if len(empty):
            out["no_liver"] = {
                "slices": len(empty),
                "predicted_percent": [round(float(v), 4) for v in empty.pred_pct],
                "share_under_0.5_percent": float((empty.pred_pct < NO_LIVER_MAX_PERCENT).mean()),
            }
        return out


def dice(tp: int, fp: int, fn: int) -> float:
    """2TP / (2TP + FP + FN) under the project's empty-mask rule (1 when both masks are empty)."""
    return scores(tp, fp, fn, 0)["dice"]


def _dices(df: pd.DataFrame) -> list[float]:
    """Dice of each row of a frame with tp, fp and fn columns."""
    return [dice(int(tp), int(fp), int(fn)) for tp, fp, fn in df[["tp", "fp", "fn"]].to_numpy()]


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return float(np.mean(v)) if v else float("nan")


# ---------------------------------------------------------------- data


def msd_val(data: Path, split: Path, part: str = "val") -> list[Slice]:
    """The validation (or ``part``) slices of a ``liverseg-split`` of msd-liver-256, with their patients."""
    manifest = pd.read_csv(data / "msd-liver-256" / "manifest.csv", dtype={"id": str})
    patient = {f"{r.id}.png": str(r.volume_idx) for r in manifest.itertuples()}
    xs = pd.read_csv(split / f"{part}_x.csv")["X"].tolist()
    ys = pd.read_csv(split / f"{part}_y.csv")["Y"].tolist()
    root = split
    out = []
    for x, y in zip(xs, ys):
        xp, yp = (root / x).resolve(), (root / y).resolve()
        out.append(Slice(read_image(xp), read_mask(yp), patient[xp.name]))
    return out


def chaos(data: Path) -> list[Slice]:
    folder = data / "chaos-ct-case"
    return [
        Slice(read_image(p), read_mask(folder / "masks" / p.name), "chaos")
        for p in sorted((folder / "images").glob("*.png"))
    ]


def lits(data: Path, window: tuple[float, float]) -> list[Slice]:
    """The LiTS volume's axial slices in the model's view (as ``liverseg-infer`` orients them)."""
    from liverseg.core.volume import read_volume

    folder = data / "lits-117"
    from liverseg.core.intensity import window_to_gray

    gray = window_to_gray(read_volume(folder / "volume.nii.gz").axial(), "hu", window, "lits-117")
    seg = read_volume(folder / "segmentation.nii.gz").axial() > 0
    return [Slice(np.ascontiguousarray(gray[k]), np.ascontiguousarray(seg[k]), "lits-117") for k in range(len(gray))]


# ---------------------------------------------------------------- transforms


def rewindow(target: float) -> Transform:
    """A linear map of the gray values that puts the slice's mean liver gray at ``target``."""

    def t(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        liver = float(img[mask].mean()) if mask.any() else 120.0
        out = np.clip(img.astype(np.float32) * (target / liver), 0, 255)
        return np.round(out).astype(np.uint8), mask

    return t


def gray_background(level: float = 60.0) -> Transform:
    """Air and fat (gray 0) at ``level``, the rest squeezed linearly above it."""

    def t(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = level + img.astype(np.float32) * ((255.0 - level) / 255.0)
        return np.round(out).astype(np.uint8), mask

    return t


def upside_down(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(img[::-1]), np.ascontiguousarray(mask[::-1])


def resized(size: int) -> Transform:
    """Bilinear image, nearest mask, to ``size`` x ``size`` (a smaller pixel size)."""

    def t(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        im = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
        mk = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(im), np.asarray(mk) > 127

    return t


def shrunk(factor: float) -> Transform:
    """The slice shrunk by ``factor`` and centred in a frame of air of its own size (a larger pixel size)."""

    def t(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape
        sh, sw = round(h * factor), round(w * factor)
        im = np.asarray(Image.fromarray(img).resize((sw, sh), Image.Resampling.BILINEAR))
        mk = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((sw, sh), Image.Resampling.NEAREST)) > 127
        oi, om = np.zeros_like(img), np.zeros_like(mask)
        y, x = (h - sh) // 2, (w - sw) // 2
        oi[y : y + sh, x : x + sw], om[y : y + sh, x : x + sw] = im, mk
        return oi, om

    return t


ROBUSTNESS: dict[str, tuple[Transform, bool]] = {  # name -> (transform, flip the prediction back)
    "liver near 60 gray": (rewindow(60.0), False),
    "liver near 170 gray": (rewindow(170.0), False),
    "gray background (air at 60)": (gray_background(60.0), False),
    "upside down (the study's storage)": (upside_down, True),
    "upscaled to 384 (about 1 mm)": (resized(384), False),
    "upscaled to 512 (about 0.75 mm)": (resized(512), False),
    "shrunk 3/4 in a 256 frame (about 2 mm)": (shrunk(0.75), False),
}


# ---------------------------------------------------------------- running


class CheckpointSession:
    """A checkpoint's PyTorch pipeline with the part of :class:`ModelSession` the rows use."""

    engine_name = "torch"
    precision = "fp32"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import hashlib

        import torch

        from liverseg.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        self.device = torch.device(device)
        self.pipe = ckpt.build_pipeline().eval().to(self.device)
        self.sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        window = ckpt.preprocessing.window
        self.contract: dict[str, Any] = {"ct": {"window_hu": list(window) if window else None}}
        size = ckpt.preprocessing.size
        self.checkpoint = {
            "epoch": ckpt.epoch,
            "best": ckpt.best,
            "model_args": ckpt.model_args,
            "grid": list(size) if size else None,
        }

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            prob, mask = self.pipe(torch.from_numpy(x).to(self.device))
        return mask.cpu().numpy(), prob.cpu().numpy()


def predict(sess: ModelSession | CheckpointSession, images: list[np.ndarray], batch: int = 8) -> list[np.ndarray]:
    """Masks of ``images`` (same-size runs batched), in order."""
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(im.shape, []).append(i)
    for idx in by_size.values():
        for k in range(0, len(idx), batch):
            part = idx[k : k + batch]
            x = np.stack([images[i] for i in part])[:, None]
            mask, _ = sess.run(np.ascontiguousarray(x))
            for j, i in enumerate(part):
                out[i] = mask[j, 0].astype(bool)
    return out


def score(
    sess: ModelSession | CheckpointSession,
    slices: list[Slice],
    transform: Transform | None = None,
    unflip: bool = False,
    cleanup: str | None = None,
) -> dict:
    """Scores of the masks of ``slices`` (after ``transform``); ``cleanup``: None, "2d" (largest component
    per slice) or "3d" (largest component of the slices stacked in order, for one contiguous volume)."""
    from liverseg.predict.cleanup import largest_component

    pairs = [transform(s.image, s.mask) if transform else (s.image, s.mask) for s in slices]
    preds = predict(sess, [p[0] for p in pairs])
    if cleanup == "2d":
        preds = [largest_component(p)[0] for p in preds]
    elif cleanup == "3d":
        preds = list(largest_component(np.stack(preds))[0])
    sc = Scores()
    for s, (_, truth), pred in zip(slices, pairs, preds):
        if unflip:
            pred, truth = pred[::-1], truth[::-1]
        sc.add(pred, truth, s.group)
    return sc.summary()


def evaluate(
    model: Path,
    data: Path,
    split: Path | None,
    engine: str = "auto",
    precision: str = "auto",
    checkpoint_device: str | None = None,
    scans: bool = True,
) -> dict[str, Any]:
    """Every row of the module docstring that the data present allows.

    ``checkpoint_device``: ``model`` is a checkpoint, run with PyTorch on that device.
    """
    sess: ModelSession | CheckpointSession
    if checkpoint_device is not None:
        sess = CheckpointSession(model, checkpoint_device)
    else:
        sess = open_session(model, device="cpu", engine=engine, precision=precision)
    window = tuple(sess.contract.get("ct", {}).get("window_hu") or (0.0, 255.0))
    rows: dict[str, Any] = {}
    t0 = time.time()
    if split is not None:
        val = msd_val(data, split)
        rows["msd-val"] = score(sess, val)
        rows["robustness"] = {}
        for name, (tf, unflip) in ROBUSTNESS.items():
            r = score(sess, val, tf, unflip)
            r["dice_pooled_change"] = r["dice_pooled_per_patient"] - rows["msd-val"]["dice_pooled_per_patient"]
            rows["robustness"][name] = r
        rows["msd-val, largest component per slice"] = score(sess, val, cleanup="2d")
        if (split / "test_x.csv").is_file():
            rows["msd-test"] = score(sess, msd_val(data, split, "test"))
    if (data / "chaos-ct-case").is_dir():
        slices = chaos(data)
        rows["chaos"] = score(sess, slices)
        rows["chaos, largest component per slice"] = score(sess, slices, cleanup="2d")
        rows["chaos, largest 3D component (--largest-component)"] = score(sess, slices, cleanup="3d")
    if (data / "lits-117").is_dir():
        slices = lits(data, (float(window[0]), float(window[1])))
        rows["lits-117"] = score(sess, slices)
        rows["lits-117, largest 3D component (--largest-component)"] = score(sess, slices, cleanup="3d")
    if scans and checkpoint_device is None:
        from liverseg.benchmarks.scans import scan_rows

        rows["scans"] = scan_rows(model, data, engine, precision)
    extra = {"checkpoint": sess.checkpoint, "device": checkpoint_device} if isinstance(sess, CheckpointSession) else {}
    return {
        "model": model.name,
        "model_sha256": sess.sha256,
        "engine": sess.engine_name,
        "precision": sess.precision,
        **extra,
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
        **stamp(),
    }


def table(result: dict[str, Any]) -> str:
    """A Markdown table of the rows."""
    lines = ["| rows | slices | pooled Dice per patient | macro Dice (slices with liver) | micro Dice | change |"]
    lines.append("|---|---|---|---|---|---|")
    rows = result["rows"]
    flat = [(k, v) for k, v in rows.items() if k not in ("robustness", "scans")]
    flat += [(f"msd-val, {k}", v) for k, v in rows.get("robustness", {}).items()]
    for name, r in flat:
        change = r.get("dice_pooled_change")
        lines.append(
            f"| {name} | {r['slices']} | {r['dice_pooled_per_patient']:.4f} | {r['dice_macro']:.4f} | "
            f"{r['dice_micro']:.4f} | {'' if change is None else f'{change:+.4f}'} |"
        )
    for name, r in flat:
        if "no_liver" in r:
            nl = r["no_liver"]
            lines.append(
                f"\n{name}: {nl['slices']} slices without liver, predicted area % {nl['predicted_percent']}, "
                f"share under {NO_LIVER_MAX_PERCENT}%: {nl['share_under_0.5_percent']:.2f}"
            )
    if rows.get("scans"):
        from liverseg.benchmarks.scans import scan_table

        lines.append("\nWhole scans and other windows (as liverseg-infer runs them, default options):")
        lines.append(scan_table(rows["scans"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m liverseg.benchmarks.reference")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model [default: the shipped reference model]")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--split", type=Path, default=None, help="liverseg-split output folder of msd-liver-256")
    ap.add_argument("--checkpoint", type=Path, default=None, help="score this checkpoint with PyTorch instead")
    ap.add_argument("--device", default="cpu", help="with --checkpoint: cpu, cuda or cuda:N [default: cpu]")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the result")
    ap.add_argument("--no-scans", action="store_true", help="leave out the whole-scan and window rows")
    a = ap.parse_args(argv)
    model = a.model if a.checkpoint is None else a.checkpoint
    if a.checkpoint is not None and a.model is not None:
        raise SystemExit("give --model or --checkpoint, not both")
    if model is None:
        from liverseg.reference import model_path

        model = model_path()
        if model is None:
            raise SystemExit("no --model and no reference model in this installation")
    result = evaluate(
        model, a.data, a.split, a.engine, a.precision, a.device if a.checkpoint else None, scans=not a.no_scans
    )
    text = table(result)
    print(text)
    if a.out is not None:
        write_text_atomic(a.out, json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

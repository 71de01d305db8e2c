"""liverseg.infer.report: a self-contained report.html from a fabricated inference run folder."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from liverseg.core.metrics import confusion, scores
from liverseg.infer.report import main, write_report

COLUMNS = (
    "index,input,label,output,status,error,height,width,latency_ms,liver_fraction,dice,iou,mPA,mIoU,"
    "precision,recall,tp,fp,fn,tn"
).split(",")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
EVIL = "scan <img src=x onerror=alert(1)>.png"  # a hostile file name (no slash)


class Checker(HTMLParser):
    """Well-formedness: every non-void element closed in order; collects imgs, links and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[dict[str, str]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        if tag == "script":
            self.scripts.append(a)
        for k in ("src", "href"):
            if a.get(k):
                self.urls.append(a[k])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_html(path: Path) -> Checker:
    """Parse, assert well-formed and self-contained (every image an embedded, valid PNG)."""
    raw = path.read_text(encoding="utf-8")
    c = Checker()
    c.feed(raw)
    c.close()
    assert c.doctype, "missing <!DOCTYPE html>"
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed elements: {c.stack}"
    assert c.tags[:1] == ["html"] and {"head", "body", "title", "style"} <= set(c.tags)
    assert "link" not in c.tags, "no external stylesheets"
    for script in c.scripts:  # the viewer's own script and its data, inline; nothing to fetch
        assert "src" not in script and script.get("type") in (None, "application/json"), script
    for body in re.findall(r"<script[^>]*>(.*?)</script>", raw, flags=re.S):
        assert not re.search(r"https?://|fetch\(|XMLHttpRequest|import\(", body), "a script must not fetch anything"
    for url in c.urls:
        assert url.startswith("data:image/png;base64,"), f"external reference {url[:60]}"
    assert not re.search(r"url\(|@import|https?://", raw.split("<body>")[0]), "style must not fetch anything"
    for img in c.imgs:
        data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.format == "PNG"
        assert img.get("alt"), "every image has alt text"
    return c


def payloads(html: str) -> list[dict]:
    """The viewer payloads embedded in a report, in page order."""
    return [json.loads(m) for m in re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', html)]


def frame_codes(payload: dict) -> list[np.ndarray]:
    """Each frame's overlay codes (bit 0 prediction, bit 1 truth) from a payload, as [h, w] arrays."""
    flat = np.frombuffer(zlib.decompress(base64.b64decode(payload["codes"])), dtype=np.uint8)
    out, at = [], 0
    for w, h in payload["sizes"]:
        out.append(flat[at : at + w * h].reshape(h, w))
        at += w * h
    assert at == flat.size
    return out


def disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def make_run(
    root: Path, *, labels: bool = True, n_ok: int = 8, summary: bool = True, missing_image: bool = False
) -> Path:
    """A fabricated inference run folder in the runner's format (per_image.csv columns, summary.json keys)."""
    rng = np.random.default_rng(1)
    data = root / "data"
    run = root / "runs" / "infer-20250101-000000"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir(parents=True)
    (run / "masks").mkdir(parents=True)
    rows = []
    for i in range(n_ok):
        img = rng.integers(10, 80, (48, 48)).astype(np.uint8)
        truth = disk(48, 48, 24, 22, 8 + i)
        img[truth] = 125
        pred = np.roll(truth, i - 3, axis=1)
        if i == 0:
            pred[:] = False  # a total miss
        name = EVIL if i == 1 else f"slice_{i:03d}.png"
        ip, lp = data / "images" / name, data / "masks" / f"slice_{i:03d}.png"
        Image.fromarray(img).save(ip)
        Image.fromarray(truth.astype(np.uint8) * 255).save(lp)
        out = run / "masks" / f"{Path(name).stem}_pred.png"
        Image.fromarray(pred.astype(np.uint8) * 255).save(out)
        r = {
            "index": i,
            "input": str(ip),
            "output": f"masks/{out.name}",
            "status": "ok",
            "error": "",
            "height": 48,
            "width": 48,
            "latency_ms": 10 + i,
            "liver_fraction": pred.mean(),
        }
        if labels:
            cm = confusion(pred, truth)
            r.update(label=str(lp), tp=cm[0], fp=cm[1], fn=cm[2], tn=cm[3])
            r.update({k: v for k, v in scores(*cm).items()})
        rows.append(r)
    if missing_image:
        Path(rows[2]["input"]).unlink()
    rows.append(
        {
            "index": n_ok,
            "input": str(data / "broken.png"),
            "status": "failed",
            "error": "image is corrupt or truncated (broken PNG file) & <unreadable>",
        }
    )
    rows.append(
        {"index": n_ok + 1, "input": str(data / "notes.txt"), "status": "skipped", "error": "not an image file"}
    )
    with (run / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    if summary:
        s = {
            "n_inputs": n_ok + 2,
            "n_ok": n_ok,
            "n_failed": 1,
            "n_skipped": 1,
            "failed": [
                {"input": str(data / "broken.png"), "error": "corrupt"},
                {"input": str(data / "ghost.png"), "error": "vanished before reading"},
            ],
            "metrics": None,
            "images_per_second": 42.5,
            "model_images_per_second": 61.0,
            "latency_ms": {"p50": 11.0, "p90": 15.0, "p99": 17.5},
            "provider": "CPUExecutionProvider",
            "providers_requested": ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "device": "cpu",
            "device_requested": "cuda",
            "threads": 2,
            "batch_size": 1,
            "model": {"path": "runs/unet/export/model.onnx", "sha256": "0" * 64, "contract": {"threshold": 0.5}},
            "versions": {"liverseg": "0.1.0"},
            "command": ["liverseg-infer", "--x", "data"],
            "started": "2025-01-01T00:00:00",
            "finished": "2025-01-01T00:00:01",
        }
        (run / "summary.json").write_text(json.dumps(s))
    return run


def test_report_with_labels(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run, n_cases=3)
    assert path == run / "report.html"
    c = check_html(path)
    text = " ".join(c.text)
    raw = path.read_text()
    # run facts, provider mismatch, throughput
    assert "CPUExecutionProvider" in text and "Asked for CUDAExecutionProvider" in text
    # with --device auto a CPU fallback is documented behaviour, not a mismatch to warn about
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "device_requested": "auto"}))
    auto_text = write_report(run, n_cases=3).read_text()
    assert "Asked for" not in auto_text and "CPUExecutionProvider" in auto_text
    (run / "summary.json").write_text(json.dumps(summary))
    assert "42.50" in text and "11.0 / 15.0 / 17.5" in text
    # the study's metrics next to Dice, with the values of the CSV (macro = mean per image)
    rows = [r for r in csv.DictReader((run / "per_image.csv").open()) if r["status"] == "ok"]
    for key, label in (("mPA", "mPA (study)"), ("mIoU", "mIoU (study)"), ("dice", "Dice")):
        assert label in text
        assert f"{np.mean([float(r[key]) for r in rows]):.4f}" in text
    # Dice histogram (inline SVG) and the viewer holding the 3 worst slices, worst first
    assert not c.imgs and c.tags.count("svg") == 1
    (viewer,) = payloads(raw)
    assert viewer["kind"] == "slices" and viewer["labelled"] and len(viewer["frames"]) == 3
    dice = sorted(float(r["dice"]) for r in rows)
    for label, d in zip(viewer["labels"]["axial"], dice):
        assert f"Dice {d:.4f}" in label
    assert viewer["labels"]["axial"][0].startswith("1 of 3 · slice_000.png · Dice 0.0000")  # the total miss
    for label in ("true positive", "false positive", "false negative"):
        assert label in text
    # every failed/skipped input with its reason, escaped
    for what in (
        "broken.png",
        "image is corrupt or truncated (broken PNG file) & <unreadable>",
        "notes.txt",
        "not an image file",
        "ghost.png",
        "vanished before reading",
    ):
        assert what in text, what
    assert "<unreadable>" not in raw and "&lt;unreadable&gt;" in raw
    assert "<img src=x" not in raw and EVIL in text


def test_report_without_labels_shows_the_predictions_in_input_order(tmp_path):
    run = make_run(tmp_path, labels=False, n_ok=5)
    path = write_report(run)
    c = check_html(path)
    text = " ".join(c.text)
    assert "Accuracy" not in text and "mPA (study)" not in text
    assert "no accuracy metrics" in text and "predicted liver" in text and "true positive" not in text
    assert c.tags.count("svg") == 1  # the liver-fraction histogram
    (viewer,) = payloads(path.read_text())
    assert not viewer["labelled"] and len(viewer["frames"]) == 5
    assert [lb.split(" · ")[1] for lb in viewer["labels"]["axial"]] == [
        Path(r["input"]).name for r in csv.DictReader((run / "per_image.csv").open()) if r["status"] == "ok"
    ]
    for code, (w, h) in zip(frame_codes(viewer), viewer["sizes"]):
        assert code.shape == (h, w) and set(np.unique(code)) <= {0, 1}  # no truth bit without labels
    assert "broken.png" in text


def test_report_tolerates_missing_parts(tmp_path):
    run = make_run(tmp_path, summary=False, missing_image=True, n_ok=4)
    (run / "masks" / "slice_003_pred.png").unlink()
    c = check_html(write_report(run))
    text = " ".join(c.text)
    assert "summary.json is missing" in text
    assert "Not shown" in text and "image not found" in text and "prediction mask not found" in text
    assert "broken.png" in text  # failures come from per_image.csv alone

    empty = tmp_path / "empty_run"
    empty.mkdir()
    c = check_html(write_report(empty))
    text = " ".join(c.text)
    assert "per_image.csv is missing" in text and "summary.json is missing" in text

    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope")


def test_report_cli(tmp_path):
    run = make_run(tmp_path, n_ok=3)
    res = CliRunner().invoke(main, [str(run), "--cases", "1"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("report.html")
    c = check_html(run / "report.html")
    assert c.tags.count("svg") == 1 and len(payloads((run / "report.html").read_text())[0]["frames"]) == 1


@pytest.mark.parametrize("make", [lambda t: t / "no_such_run", lambda t: _file(t / "per_image.csv")])
def test_report_cli_bad_run_dir_is_one_line_exit_2(tmp_path, make):
    res = CliRunner().invoke(main, [str(make(tmp_path))])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    errors = [ln for ln in res.stderr.splitlines() if ln.lower().startswith("error:")]
    assert len(errors) == 1 and "RUN_DIR" in errors[0], res.stderr


def _file(path: Path) -> Path:
    path.write_text("index\n")
    return path


# ---------------------------------------------------------------- issue 16: a report that explains itself


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _rewrite(run: Path, **changes) -> None:
    s = _summary(run)
    s.update(changes)
    (run / "summary.json").write_text(json.dumps(s))


def _add_empty_truth_rows(run: Path, fp_pixels: list[int]) -> list[str]:
    """Rows whose truth holds no liver, with ``fp_pixels[i]`` predicted pixels each; their input names."""
    rows = list(csv.DictReader((run / "per_image.csv").open()))
    names = []
    for j, n_fp in enumerate(fp_pixels):
        i = 100 + j
        img = np.full((48, 48), 30, np.uint8)
        truth = np.zeros((48, 48), bool)
        pred = np.zeros((48, 48), bool)
        pred.flat[:n_fp] = True
        ip = run.parent.parent / "data" / "images" / f"empty_{j}.png"
        lp = run.parent.parent / "data" / "masks" / f"empty_{j}.png"
        Image.fromarray(img).save(ip)
        Image.fromarray(truth.astype(np.uint8)).save(lp)
        Image.fromarray(pred.astype(np.uint8) * 255).save(run / "masks" / f"empty_{j}_pred.png")
        cm = confusion(pred, truth)
        r = {"index": i, "input": str(ip), "label": str(lp), "output": f"masks/empty_{j}_pred.png", "status": "ok"}
        r.update(height=48, width=48, latency_ms=5, liver_fraction=pred.mean(), tp=cm[0], fp=cm[1], fn=cm[2], tn=cm[3])
        r.update(scores(*cm))
        rows.insert(0, r)
        names.append(ip.name)
    with (run / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return names


def test_viewer_order_is_worst_dice_first_then_false_positives_on_slices_without_liver(tmp_path):
    run = make_run(tmp_path)
    _add_empty_truth_rows(run, [6, 0, 40])
    html = write_report(run).read_text()
    check_html(run / "report.html")
    names = [lb.split(" · ")[1] for lb in payloads(html)[0]["labels"]["axial"]]
    with_liver = [n for n in names if not n.startswith("empty_")]
    assert names[: len(with_liver)] == with_liver, "slices with liver in the truth come first"
    assert with_liver[0] == "slice_000.png", "the total miss of a slice with liver is the worst"
    # a Dice 0 from 6 stray pixels does not head the list; most false-positive pixels first; the clean one last
    assert names[len(with_liver) :] == ["empty_2.png", "empty_0.png", "empty_1.png"]
    assert "8 slices with liver in the truth come first" in html and "the 2 with false positives first" in html


@pytest.mark.parametrize("side", [24, 300])
def test_viewer_frames_are_at_most_the_view_side_and_codes_match_the_masks(tmp_path, side):
    from liverseg.infer.viewer import VIEW_SIDE

    run = make_run(tmp_path, n_ok=3)
    for f in (tmp_path / "data" / "images").glob("*.png"):  # every input, truth and mask at side x side
        Image.fromarray(np.asarray(Image.open(f).convert("L").resize((side, side)))).save(f)
    for f in list((tmp_path / "data" / "masks").glob("*.png")) + list((run / "masks").glob("*.png")):
        Image.open(f).resize((side, side), Image.Resampling.NEAREST).save(f)
    viewer = payloads(write_report(run).read_text())[0]
    want = min(side, VIEW_SIDE)
    assert viewer["sizes"] == [[want, want]] * 3
    for b64 in viewer["frames"]:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.size == (want, want)
    rows = {Path(r["input"]).name: r for r in csv.DictReader((run / "per_image.csv").open())}
    seen = set()
    for label, code in zip(viewer["labels"]["axial"], frame_codes(viewer)):
        r = rows[label.split(" · ")[1]]
        pred = np.asarray(Image.open(run / r["output"])) > 0
        truth = np.asarray(Image.open(r["label"])) > 0
        full = pred.astype(np.uint8) | (truth.astype(np.uint8) << 1)
        seen |= set(np.unique(code).tolist())
        if side <= VIEW_SIDE:  # not shrunk: the codes are the masks, pixel for pixel
            assert np.array_equal(code, full)
        else:  # shrunk by a box filter: each region keeps its share of the image
            for value in (1, 2, 3):
                assert abs((code == value).mean() - (full == value).mean()) < 0.01
    assert seen == {0, 1, 2, 3}, "true positives, false positives and false negatives all drawn"


def test_true_positives_are_visible_and_errors_keep_the_studys_colours():
    from liverseg.core.overlay import FN_COLOR, FP_COLOR, TP_VISIBLE_COLOR, overlay_rgb

    img = np.full((4, 4), 230, np.uint8)  # bright liver tissue
    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0, :2] = truth[0, :2] = True  # true positive
    pred[1, 0] = True  # false positive
    truth[2, 0] = True  # false negative
    out = overlay_rgb(img, pred, truth, tp_color=TP_VISIBLE_COLOR, alpha=1.0)
    assert tuple(out[0, 0]) == TP_VISIBLE_COLOR and tuple(out[1, 0]) == FP_COLOR and tuple(out[2, 0]) == FN_COLOR
    tp = out[0, 0].astype(int)
    assert abs(tp - np.array([230, 230, 230])).max() > 100, "a true positive stands out from bright liver"
    assert tuple(overlay_rgb(img, pred, truth, alpha=1.0)[0, 0]) == (255, 255, 255), "the study's default stays"


def test_latency_labels_say_what_they_measure(tmp_path):
    run = make_run(tmp_path)
    _rewrite(run, end_to_end_latency_ms={"p50": 490.0, "p90": 600.0, "p99": 700.0})
    text = " ".join(check_html(write_report(run)).text)
    assert "model time per slice (ms)" in text and "p50 / p90 / p99: its share of its batch's model call" in text
    assert "time in the pipeline per slice (ms)" in text
    assert "490.0 / 600.0 / 700.0 (p50 / p90 / p99: decode start to files written, including the wait" in text
    assert "end-to-end latency" not in text


def test_device_notes_are_one_line_without_the_raw_loader_error(tmp_path):
    run = make_run(tmp_path)
    raw = (
        "device auto: CPU (CUDA did not load: libonnxruntime_providers_cuda.so failed to load: libcublasLt.so.13: "
        "cannot open shared object file: No such file or directory)"
    )
    _rewrite(run, device_notes=["engine: onnxruntime fp32 on cpu (first usable) -- model.onnx", raw])
    c = check_html(write_report(run))
    text = " ".join(c.text)
    assert "cannot open shared object file" not in text and "libonnxruntime_providers_cuda" not in text
    assert "device auto: CPU (CUDA not usable: libcublasLt.so.13 missing)" in text
    assert text.count("device choice") == 1


def _contract(**ct) -> dict:
    return {
        "threshold": 0.5,
        "ct": {"window_hu": [0.0, 255.0], "pixel_spacing_mm": None, **ct},
        "provenance": {"data": "msd-liver-256: 448 axial slices"},
        "training": {"config": {}, "data_summary": {}},
    }


def _banner_text(run: Path) -> str:
    html = write_report(run).read_text()
    if '<div class="banner">' not in html:
        return ""
    return html.split('<div class="banner">', 1)[1].split("</div>", 1)[0]


def test_provenance_banner(tmp_path):
    run = make_run(tmp_path)
    model = {"path": "m.onnx", "sha256": "0" * 64}
    pre = {"window_hu": [0.0, 255.0], "spacing_mm": 0.8}
    _rewrite(run, model={**model, "contract": _contract()}, preprocessing={**pre, "spacing_mm": None})
    assert _banner_text(run) == "", "real training data, same window, no scale to compare: no banner"

    synthetic = _contract()
    synthetic["provenance"]["data"] = "synthetic CT phantoms (liverseg-demo)"
    _rewrite(run, model={**model, "contract": synthetic}, preprocessing=pre)
    assert "trained on synthetic data (synthetic CT phantoms (liverseg-demo))" in _banner_text(run)
    assert "msd-liver" not in _banner_text(run)

    _rewrite(
        run, model={**model, "contract": _contract(pixel_spacing_mm=1.5)}, preprocessing={**pre, "spacing_mm": None}
    )
    banner = _banner_text(run)
    assert "trained at 1.5 mm pixels" in banner and "have no pixel size" in banner and "--spacing" in banner

    _rewrite(run, model={**model, "contract": _contract()}, preprocessing={**pre, "window_hu": [-100.0, 200.0]})
    banner = _banner_text(run)
    assert "HU [-100, 200]" in banner and "trained on [0, 255]" in banner

    _rewrite(run, model={**model, "contract": _contract()}, preprocessing=pre)
    assert "inputs at 0.8 mm pixels were used as they are" in _banner_text(run)
    html = write_report(run).read_text()
    assert "model trained on" in html and "msd-liver-256: 448 axial slices" in html


def test_svg_histogram_counts_and_marks():
    import xml.etree.ElementTree as ET

    from liverseg.core.html import svg_histogram

    values = [0.05, 0.5, 0.52, 0.97, 0.98, 0.99, float("nan"), None]
    root = ET.fromstring(svg_histogram(values, xlabel="Dice <per image>", bins=10, value_range=(0.0, 1.0), title="T"))
    ns = "{http://www.w3.org/2000/svg}"
    bars = root.findall(f"{ns}rect[@class='bar']")
    # one bar per non-empty bin, each as tall as its count: bins 0, 5 (two values), 9 (three)
    assert [b.findtext(f"{ns}title", "").split(": ")[1] for b in bars] == ["1", "2", "3"]
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights[1] == pytest.approx(2 * heights[0], abs=0.2) and heights[2] == pytest.approx(3 * heights[0], abs=0.2)
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "n = 6" in texts and "Dice <per image>" in texts  # None and NaN left out; text escaped
    assert f"mean {np.mean([0.05, 0.5, 0.52, 0.97, 0.98, 0.99]):.3f} (dashed)" in texts
    assert "median 0.745 (dotted)" in texts
    assert {"0", "0.2", "0.4", "0.6", "0.8", "1"} <= set(texts)  # x ticks over the range
    empty = ET.fromstring(svg_histogram([], xlabel="x"))
    assert "no values" in [t.text for t in empty.iter(f"{ns}text")] and not empty.findall(f"{ns}rect[@class='bar']")
    assert ET.fromstring(svg_histogram([3.0, 3.0], xlabel="x")) is not None  # one distinct value: a range around it


def test_svg_slice_profile_draws_both_areas_and_breaks_dice_where_no_slice_has_liver():
    import xml.etree.ElementTree as ET

    from liverseg.core.html import svg_slice_profile

    ns = "{http://www.w3.org/2000/svg}"
    pos = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    pred = [0, 100, 400, 250, 0, 0]
    true = [0, 120, 380, 260, 10, 0]
    dice = [None, 0.9, 0.97, 0.95, 0.0, None]
    root = ET.fromstring(svg_slice_profile(pos, pred, true, dice, title="vol <1>"))
    lines = {pl.get("class"): pl for pl in root.iter(f"{ns}polyline") if pl.get("class") in ("pred", "true")}
    assert set(lines) == {"pred", "true"}
    pts = [tuple(map(float, p.split(","))) for p in lines["pred"].get("points", "").split()]
    assert len(pts) == 6 and pts[0][0] < pts[-1][0]  # left to right by position
    assert pts[2][1] < pts[1][1] < pts[0][1]  # more liver is higher
    dice_lines = [pl for pl in root.iter(f"{ns}polyline") if pl.get("class") == "dice"]
    assert [len(pl.get("points", "").split()) for pl in dice_lines] == [4]  # slices 1-4, None left out
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "vol <1>" in texts and "Dice per slice" in texts and "true" in texts and "Dice" in texts
    alone = ET.fromstring(svg_slice_profile(pos, pred, None, None))  # unlabelled: one line, no Dice axis
    assert [pl.get("class") for pl in alone.iter(f"{ns}polyline")] == ["pred"]
    assert "Dice" not in [t.text for t in alone.iter(f"{ns}text")]
    dashed = [pl for pl in root.iter(f"{ns}polyline") if pl.get("class") == "true"]
    assert dashed[0].get("stroke-dasharray")
    empty = ET.fromstring(svg_slice_profile([], [], None, None))
    assert "no slices" in [t.text for t in empty.iter(f"{ns}text")]


# ---------------------------------------------------------------- issue 31: the viewer's geometry


def test_volume_viewer_markers_positions_and_pixels_follow_the_affine():
    """A volume stored left-right and foot-head flipped: the viewer still shows R on the left, z ascending."""
    from liverseg.core.volume import Volume
    from liverseg.infer.viewer import volume_payload

    shape = (40, 30, 6)  # i, j, k of the file
    affine = np.array([[0.8, 0, 0, -16.0], [0, 0.8, 0, -12.0], [0, 0, -2.5, 50.0], [0, 0, 0, 1]])  # i->R, j->A, k->I
    mask = np.zeros(shape, bool)
    mask[30:36, 10:14, 1] = True  # on the patient's right (x > 0), file slice 1 = the second from the top
    vol = Volume(np.zeros(shape, np.int16), affine, "case.nii.gz", "nifti")
    pred = Volume(mask.astype(np.uint8), affine, "mask", "nifti").axial().astype(bool)
    gray = np.zeros(pred.shape, np.uint8)
    payload = volume_payload(gray, pred, None, vol.axial_spacing(), vol)
    assert payload["markers"] == {
        "axial": ["A", "L", "P", "R"],
        "coronal": ["S", "L", "I", "R"],
        "sagittal": ["S", "P", "I", "A"],
    }
    assert payload["coordinates"] == "RAS" and payload["orientation_note"] is None
    # view slice n is file slice 5 - n: z rises from the feet (50 - 2.5 * 5 = 37.5) to the head (50)
    z = [float(t.split(" · ")[1].removeprefix("z = ").removesuffix(" mm")) for t in payload["labels"]["axial"]]
    assert z == [37.5, 40.0, 42.5, 45.0, 47.5, 50.0]
    code = frame_codes(payload)[4]  # file slice 1 is view slice 4
    cols = np.flatnonzero(code.any(axis=0))
    assert cols.max() < code.shape[1] / 2, "the patient's right is on the viewer's left, as the 'R' marker says"
    assert payload["start"][0] == 4 and not frame_codes(payload)[0].any()


def test_dicom_viewer_labels_carry_instance_numbers_and_patient_coordinates(tmp_path):
    from liverseg.apps.dicom_synth import write_series
    from liverseg.core.dicom import read_series
    from liverseg.infer.viewer import volume_payload

    hu = np.full((5, 16, 12), -1000, np.int16)
    numbers = [50, 40, 30, 20, 10]  # InstanceNumber falls as z rises, as in the CHAOS series
    write_series(tmp_path / "s", hu, spacing=(2.0, 0.5, 0.5), origin=(-3.0, 4.0, -331.0), instance_numbers=numbers)
    vol = read_series(tmp_path / "s")
    pred = np.zeros((5, 16, 12), bool)
    payload = volume_payload(np.zeros((5, 16, 12), np.uint8), pred, None, vol.axial_spacing(), vol)
    assert payload["coordinates"] == "LPS"
    assert payload["labels"]["axial"] == [
        f"slice {k + 1} of 5 · z = {-331.0 + 2 * k:.1f} mm · InstanceNumber {numbers[k]}" for k in range(5)
    ]
    # coronal rows at y = 4 + 0.5 row, sagittal columns at x = -3 + 0.5 column (LPS, as ImagePositionPatient)
    assert payload["labels"]["coronal"][2] == "row 3 of 16 · y = 5.0 mm"
    assert payload["labels"]["sagittal"][11] == "column 12 of 12 · x = 2.5 mm"


@pytest.mark.parametrize(("side", "view"), [(512, 256), (510, 170), (300, 200)])
def test_volume_masks_shrink_as_each_slice_would_through_the_box_filter(side, view):
    """The strided block sums (whole factors 2 and 3) keep the same pixels as Pillow's box filter slice by slice;
    another factor (1.5) goes through the box filter itself."""
    from liverseg.infer.viewer import _shrink_masks, codes

    rng = np.random.default_rng(side)
    masks = rng.random((3, side, side)) < 0.5
    masks[1] = disk(side, side, side / 2, side / 3, side / 4)
    want = np.stack([codes(m, None, (view, view)).astype(bool) for m in masks])
    got = _shrink_masks(masks, (view, view))
    assert got.shape == (3, view, view) and np.array_equal(got, want)


def test_every_quality_flag_is_explained_in_the_findings():
    from liverseg.infer.report import FLAG_TEXT
    from liverseg.predict.qc import FLAGS

    assert set(FLAG_TEXT) == set(FLAGS), "a flag without a line for the reader, or a line for no flag"

"""DICOMweb in and DICOM-SEG back (liverseg.infer.dicomweb), against a real Orthanc on localhost.

The Orthanc tests start their own server (Debian's ``orthanc`` and ``orthanc-dicomweb``,
installed by ``make system-packages``) on a free localhost port with a temporary
configuration and storage folder, with HTTP authentication on, load the CHAOS DICOM
series from ../shared/data, and stop it at the end. Without Orthanc (or the data) they
skip with the reason; with LIVERSEG_REQUIRE_DATA=1 (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from liverseg.core.errors import UsageError
from liverseg.infer.cli import main as infer_main
from liverseg.infer.dicomweb import PASSWORD_ENV, USER_ENV, Target, parse

requests = pytest.importorskip("requests", reason="the 'dicomweb' extra is not installed")

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "liverseg", "s3cret-Pa55"
NOT_LISTENING = "dicomweb+http://127.0.0.1:9/dicom-web"  # the discard port: nothing listens on localhost


# ---------------------------------------------------------------- URLs (no server)


def test_urls_parse_to_study_series_query_and_root():
    t = parse("dicomweb+http://pacs:8042/dicom-web/studies/1.2.3")
    assert t == Target("http://pacs:8042/dicom-web", "1.2.3")
    assert parse(t.url) == t
    s = parse("dicomweb+https://pacs/a/b/studies/1.2.3/series/4.5")
    assert (s.service, s.study, s.series) == ("https://pacs/a/b", "1.2.3", "4.5")
    q = parse("dicomweb+http://pacs/dicom-web/studies?PatientID=P1&StudyDate=20240101-20241231")
    assert q.is_query and dict(q.query) == {"PatientID": "P1", "StudyDate": "20240101-20241231"}
    assert parse("dicomweb+http://pacs:8042/dicom-web/", root_only=True).url == "dicomweb+http://pacs:8042/dicom-web"


@pytest.mark.parametrize(
    "url, says",
    [
        ("dicomweb+http://pacs/dicom-web", "names no study"),
        ("dicomweb+http://pacs/dicom-web/studies", "needs at least one filter"),
        ("dicomweb+http://pacs/dicom-web/studies/1.2/instances/3", "expected .../studies/STUDY_UID"),
        ("dicomweb+http://pacs:x/dicom-web/studies/1.2", "port is not a number"),
        ("dicomweb+http://bob:hunter2@pacs/dicom-web/studies/1.2", "credentials in the URL are refused"),
    ],
)
def test_malformed_urls_are_usage_errors(url, says):
    with pytest.raises(UsageError, match=says) as e:
        parse(url)
    assert "hunter2" not in str(e.value) and "bob" not in str(e.value)


def test_credentials_on_the_command_line_are_refused_without_echoing_them(tmp_path):
    r = CliRunner().invoke(
        infer_main,
        [
            "dicomweb+http://bob:hunter2@127.0.0.1:9/dicom-web/studies/1.2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 2 and "credentials in the URL are refused" in r.output
    assert "hunter2" not in r.output and "bob" not in r.output
    r = CliRunner().invoke(infer_main, ["x.csv", "--store", "dicomweb+http://bob:hunter2@127.0.0.1:9/dicom-web"])
    assert r.exit_code == 2 and "hunter2" not in r.output


def test_labels_series_and_a_lone_store_overlay_are_refused(tmp_path):
    url = "dicomweb+http://127.0.0.1:9/dicom-web/studies/1.2"
    r = CliRunner().invoke(infer_main, [url, "--series", "1.2.3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "names its series itself" in r.output, r.output
    r = CliRunner().invoke(infer_main, [url, "--labels", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--labels: not taken with DICOMweb inputs" in r.output, r.output
    r = CliRunner().invoke(infer_main, [url, "--store-overlay", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--store-overlay sends the overlay series with the SEG: it needs --store" in r.output


def test_a_csv_mixing_urls_and_files_is_refused(tmp_path):
    lst = tmp_path / "list.csv"
    lst.write_text("X\ndicomweb+http://127.0.0.1:9/dicom-web/studies/1.2\nimage.png\n")
    r = CliRunner().invoke(infer_main, [str(lst), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "both dicomweb+ URLs and files" in r.output


def test_without_the_dicomweb_extra_a_url_is_a_usage_error_naming_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dicomweb_client", None)  # import fails as if not installed
    r = CliRunner().invoke(infer_main, ["dicomweb+http://127.0.0.1:9/dicom-web/studies/1.2", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "pip install 'liverseg[dicomweb]'" in r.output, r.output


# ---------------------------------------------------------------- a real Orthanc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_orthanc() -> str:
    exe = shutil.which("Orthanc")
    why = None
    if exe is None:
        why = "Orthanc is not installed (Debian packages orthanc and orthanc-dicomweb: make system-packages)"
    elif not PLUGIN.is_file():
        why = f"Orthanc's DICOMweb plugin is not installed ({PLUGIN}; Debian package orthanc-dicomweb)"
    if why:
        if os.environ.get("LIVERSEG_REQUIRE_DATA") == "1":
            pytest.fail(why + "; LIVERSEG_REQUIRE_DATA=1 makes this a failure")
        pytest.skip(why)
    return str(exe)


@dataclass
class Orthanc:
    """A running Orthanc: its REST root, its DICOMweb root (as a liverseg URL) and the CHAOS study."""

    rest: str
    root: str  # dicomweb+http://127.0.0.1:PORT/dicom-web
    study: str
    series: str

    def upload(self, data: bytes) -> None:
        r = requests.post(f"{self.rest}/instances", data=data, auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()

    def qido(self, path: str) -> list[dict]:
        r = requests.get(f"{self.rest}/dicom-web/{path}", auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json() if r.content else []

    def seg_instances(self, modality: str = "SEG") -> list[dict]:
        """The SEG instances (or those of another modality: OT, the overlay series) in the CHAOS study."""
        out = []
        for s in self.qido(f"studies/{self.study}/series"):
            if s["00080060"]["Value"][0] == modality:
                out += self.qido(f"studies/{self.study}/series/{s['0020000E']['Value'][0]}/instances")
        return out

    def retrieve(self, series: str, sop: str, into: Path) -> pydicom.Dataset:
        """One instance of the CHAOS study by WADO-RS, saved to ``into`` and read."""
        r = requests.get(
            f"{self.rest}/dicom-web/studies/{self.study}/series/{series}/instances/{sop}",
            auth=(USER, PASSWORD),
            headers={"Accept": 'multipart/related; type="application/dicom"'},
            timeout=30,
        )
        r.raise_for_status()
        into.write_bytes(r.content[r.content.index(b"DICM") - 128 :])
        return pydicom.dcmread(into)


@contextlib.contextmanager
def running_orthanc(home: Path, **config: object) -> Iterator[str]:
    """An Orthanc with the DICOMweb plugin and HTTP authentication on a free localhost port; its REST root.

    Its configuration and storage live in ``home``; ``config`` adds or overrides keys. Stopped on exit.
    """
    exe = _require_orthanc()
    port = _free_port()
    settings = {
        "Name": "liverseg-test",
        "StorageDirectory": str(home / "db"),
        "IndexDirectory": str(home / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False,
        **config,
    }
    (home / "orthanc.json").write_text(json.dumps(settings))
    rest = f"http://127.0.0.1:{port}"
    with open(home / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([exe, str(home / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(f"{rest}/system", timeout=2)
                    break  # it answers (401 without credentials)
                except requests.ConnectionError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Orthanc did not start: {(home / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
            yield rest
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def orthanc(chaos_dir, tmp_path_factory) -> Iterator[Orthanc]:
    """One Orthanc for the module, holding the CHAOS series."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as rest:
        files = sorted((chaos_dir / "dicom").glob("*.dcm"))
        with requests.Session() as s:
            for f in files:
                s.post(f"{rest}/instances", data=f.read_bytes(), auth=(USER, PASSWORD), timeout=30).raise_for_status()
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        yield Orthanc(rest, f"dicomweb+{rest}/dicom-web", str(first.StudyInstanceUID), str(first.SeriesInstanceUID))


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv("LIVERSEG_DICOMWEB_RETRIES", "1")


def _infer(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(infer_main, [*args, "--no-progress"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def _errors(out: Path) -> dict[str, str]:
    with open(out / "per_image.csv", newline="") as f:
        return {row["input"]: row["error"] for row in csv.DictReader(f)}


def _no_secret_in(folder: Path, *texts: str) -> None:
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".html", ".txt"):
            assert PASSWORD not in p.read_text(errors="replace"), p
    for t in texts:
        assert PASSWORD not in t


@pytest.fixture(scope="module")
def round_trip(orthanc, tmp_path_factory) -> tuple[Path, int, str]:
    """The one command: the CHAOS study from Orthanc, local outputs, the DICOM-SEG stored back."""
    out = tmp_path_factory.mktemp("round-trip") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(USER_ENV, USER)
        mp.setenv(PASSWORD_ENV, PASSWORD)
        study = f"{orthanc.root}/studies/{orthanc.study}"
        code, output = _infer(study, "--store", orthanc.root, "--store-overlay", "--out", str(out))
    return out, code, output


@pytest.mark.realdata
def test_round_trip_stores_a_seg_equal_to_the_local_mask(orthanc, round_trip, chaos_dir, tmp_path):
    from liverseg.core.dicom import read_seg_mask, read_series
    from liverseg.core.volume import read_volume

    out, code, output = round_trip
    assert code == 0, output
    masks = sorted((out / "masks").glob("*.nii.gz"))
    assert [m.name for m in masks] == [f"{orthanc.series}.nii.gz"]
    local_seg = out / "masks" / f"{orthanc.series}_seg.dcm"
    assert local_seg.is_file()
    stored = orthanc.seg_instances()
    assert len(stored) == 1, stored
    # the stored SEG, fetched back by WADO-RS, references the CT series and equals the NIfTI mask voxel for voxel
    sop = stored[0]["00080018"]["Value"][0]
    seg_series = stored[0]["0020000E"]["Value"][0]
    seg = orthanc.retrieve(seg_series, sop, tmp_path / "stored.dcm")
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == orthanc.study
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == orthanc.series
    assert seg.SOPInstanceUID == pydicom.dcmread(local_seg).SOPInstanceUID
    vol = read_series(chaos_dir / "dicom")
    from_server = read_seg_mask(tmp_path / "stored.dcm", vol)  # [K, R, C] in sorted slice order
    nifti = np.asarray(read_volume(masks[0]).data).transpose(2, 1, 0) != 0  # (C, R, K) -> [K, R, C]
    assert nifti.any() and from_server.shape == nifti.shape
    assert np.array_equal(from_server, nifti)  # Dice 1.0
    assert "DICOM-SEG stored on" in output
    _no_secret_in(out, output)
    # --store-overlay: a Secondary Capture image of each slice that holds liver, the liver's outline burned in
    overlays = orthanc.seg_instances("OT")
    with_liver = np.flatnonzero(nifti.any(axis=(1, 2)))
    assert len(overlays) == len(with_liver) and "overlay series stored on" in output
    k = int(with_liver[len(with_liver) // 2])
    one = next(o for o in overlays if int(o["00200013"]["Value"][0]) == k + 1)  # InstanceNumber: sorted slice + 1
    sc = orthanc.retrieve(one["0020000E"]["Value"][0], one["00080018"]["Value"][0], tmp_path / "overlay.dcm")
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.StudyInstanceUID == orthanc.study  # Secondary Capture
    px = sc.pixel_array  # [R, C, 3]
    drawn = (px[..., 0] != px[..., 1]) | (px[..., 1] != px[..., 2])  # coloured: the outline; the CT stays gray
    from scipy import ndimage

    edge = nifti[k] & ~ndimage.binary_erosion(nifti[k])
    near = ndimage.binary_dilation(edge, iterations=3)
    assert drawn.sum() >= edge.sum() // 2 and not (drawn & ~near).any(), "the outline lies on the mask's edge"


@pytest.mark.realdata
def test_resume_never_stores_a_seg_twice(orthanc, round_trip):
    out, code, _ = round_trip
    assert code == 0
    study = f"{orthanc.root}/studies/{orthanc.study}"
    args = (study, "--store", orthanc.root, "--store-overlay", "--out", str(out), "--resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(USER_ENV, USER)
        mp.setenv(PASSWORD_ENV, PASSWORD)
        # the journal says the series is done: nothing runs, nothing is sent
        code, output = _infer(*args)
        assert code == 0 and "1 of 1 inputs already complete" in output, output
        assert len(orthanc.seg_instances()) == 1
        # a run killed after the store and before its journal row: the input runs again, makes the same UIDs,
        # finds them on the server and sends nothing
        (out / "journal.jsonl").write_text("")
        code, output = _infer(*args)
    assert code == 0, output
    assert "DICOM-SEG already on" in output and "not sent again" in output
    assert len(orthanc.seg_instances()) == 1
    assert "overlay series already on" in output
    n_overlay = len(orthanc.seg_instances("OT"))
    assert n_overlay > 0 and f"({n_overlay} images): not sent again" in output


def _copy_of_chaos(chaos_dir: Path, n: int, modality: str = "CT") -> tuple[str, list[bytes]]:
    """``n`` CHAOS slices as a new study and series (new UIDs): (study UID, the files' bytes)."""
    study, series = generate_uid(), generate_uid()
    out = []
    for f in sorted((chaos_dir / "dicom").glob("*.dcm"))[:n]:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, modality
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        b = io.BytesIO()
        ds.save_as(b, enforce_file_format=True)
        out.append(b.getvalue())
    return study, out


@pytest.mark.realdata
def test_each_failure_is_one_line_with_the_url_and_the_batch_goes_on(orthanc, chaos_dir, tmp_path, credentials):
    no_ct, files = _copy_of_chaos(chaos_dir, 2, modality="MR")
    for b in files:
        orthanc.upload(b)
    truncated, files = _copy_of_chaos(chaos_dir, 3)
    for i, b in enumerate(files):  # the middle instance holds 1000 bytes of its 512x512 slice
        if i == 1:
            ds = pydicom.dcmread(io.BytesIO(b))
            ds.PixelData = ds.PixelData[:1000]
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            b = buf.getvalue()
        orthanc.upload(b)
    wrong = generate_uid()
    rows = [
        f"{NOT_LISTENING}/studies/{orthanc.study}",
        f"{orthanc.root}/studies/{wrong}",
        f"{orthanc.root}/studies/{no_ct}",
        f"{orthanc.root}/studies/{truncated}",
        f"{orthanc.root}/studies/{orthanc.study}/series/{wrong}",
    ]
    lst = tmp_path / "studies.csv"
    lst.write_text("X\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    code, output = _infer(str(lst), "--out", str(out))
    assert code == 1, output
    errors = _errors(out)
    assert len(errors) == 5
    summary = [line for line in output.splitlines() if line.startswith("failed   ")]  # the closing summary
    assert sorted(summary) == sorted(f"failed   {x}" for x in errors.values())
    e = list(errors.values())
    assert e[0] == f"{NOT_LISTENING}/studies/{orthanc.study}: server unreachable (Connection refused)"
    assert e[1] == f"{orthanc.root}/studies/{wrong}: no study {wrong} on the server (QIDO-RS found nothing)"
    assert e[2] == f"{orthanc.root}/studies/{no_ct}: no CT series in the study (its series: MR)"
    # named by the instance's WADO-RS URL: .../studies/S/series/S/instances/SOP_UID
    where = re.escape(f"{orthanc.root}/studies/{truncated}/series/")
    assert re.match(where + r"[\d.]+/instances/[\d.]+: pixel data", e[3]), e[3]
    assert "less than expected (1000 vs 524288 bytes)" in e[3]
    assert e[4] == (
        f"{orthanc.root}/studies/{orthanc.study}/series/{wrong}: no series {wrong} in study {orthanc.study} "
        "on the server (QIDO-RS found nothing)"
    )
    assert all("\n" not in x for x in e)
    _no_secret_in(out, output)


@pytest.mark.realdata
def test_authentication_required_refused_and_from_netrc(orthanc, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERSEG_DICOMWEB_RETRIES", "0")
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    url = f"{orthanc.root}/studies/{orthanc.study}"
    code, output = _infer(url, "--out", str(tmp_path / "a"))
    assert code == 1
    assert _errors(tmp_path / "a")[url] == f"{url}: HTTP 401 Unauthorized: the server needs credentials " + (
        "(LIVERSEG_DICOMWEB_USER/LIVERSEG_DICOMWEB_PASSWORD, LIVERSEG_DICOMWEB_TOKEN or netrc)"
    )
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + PASSWORD)
    code, output = _infer(url, "--out", str(tmp_path / "b"))
    assert code == 1
    assert _errors(tmp_path / "b")[url] == f"{url}: HTTP 401 Unauthorized: the server refused the credentials"
    _no_secret_in(tmp_path / "b", output)
    # netrc: the right credentials get past authentication (to a study that is not there)
    monkeypatch.delenv(USER_ENV)
    monkeypatch.delenv(PASSWORD_ENV)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    wrong = generate_uid()
    code, output = _infer(f"{orthanc.root}/studies/{wrong}", "--out", str(tmp_path / "c"))
    assert code == 1 and "QIDO-RS found nothing" in output and "HTTP 401" not in output  # a random UID may hold "401"
    _no_secret_in(tmp_path / "c", output)


class _Proxy:
    """A localhost HTTP(S) proxy in front of Orthanc for GET requests.

    ``cut``: every WADO-RS retrieval (a multipart answer) is cut off halfway through its body.
    ``tls``: (certificate, key) files: it speaks HTTPS. (Debian's Orthanc 1.10.1 with ``SslEnabled``
    crashed with a segmentation fault on the first HTTPS connection here, so TLS is served by this proxy.)
    """

    def __init__(self, upstream: str, *, cut: bool = False, tls: tuple[Path, Path] | None = None) -> None:
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
                r = requests.get(upstream + self.path, headers=headers, timeout=30)
                body = r.content
                multipart = "multipart/related" in r.headers.get("Content-Type", "")
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cut and multipart else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.realdata
def test_a_transfer_cut_short_fails_that_input(orthanc, tmp_path, credentials):
    proxy = _Proxy(orthanc.rest, cut=True)
    try:
        url = f"dicomweb+{proxy.url}/dicom-web/studies/{orthanc.study}"
        code, output = _infer(url, "--out", str(tmp_path / "o"))
    finally:
        proxy.close()
    assert code == 1
    (series_url, error), *_ = _errors(tmp_path / "o").items()
    assert series_url == f"{url}/series/{orthanc.series}"
    assert re.fullmatch(
        re.escape(f"{series_url}: transfer cut short (IncompleteRead(")
        + r"\d+ bytes read, \d+ more expected\)\) after \d+ instances",
        error,
    ), error


@pytest.mark.realdata
def test_a_store_that_fails_fails_the_input_and_resume_stores_it_once(orthanc, chaos_dir, tmp_path, credentials):
    study, files = _copy_of_chaos(chaos_dir, 32)
    for b in files:
        orthanc.upload(b)
    out = tmp_path / "out"
    url = f"{orthanc.root}/studies/{study}"
    code, output = _infer(url, "--store", NOT_LISTENING, "--out", str(out))
    assert code == 1, output
    (error,) = _errors(out).values()
    assert error == f"{NOT_LISTENING}/studies/{study}: DICOM-SEG not stored: server unreachable (Connection refused)"
    # the input failed, so --resume runs it again; this time the store answers
    code, output = _infer(url, "--store", orthanc.root, "--out", str(out), "--resume")
    assert code == 0, output
    segs = [s for s in orthanc.qido(f"studies/{study}/series") if s["00080060"]["Value"][0] == "SEG"]
    assert len(segs) == 1


@pytest.mark.realdata
def test_a_query_url_lists_every_ct_series_of_the_matching_studies(orthanc, chaos_dir, credentials):
    from liverseg.infer.dicomweb import list_urls, read_series_url

    patient = "LIVERSEG-Q-" + generate_uid()[-12:]
    made = {}
    for modality in ("CT", "CT", "MR"):
        study, files = _copy_of_chaos(chaos_dir, 2, modality=modality)
        for b in files:
            ds = pydicom.dcmread(io.BytesIO(b))
            ds.PatientID, ds.StudyDate = patient, "20240315"
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            orthanc.upload(buf.getvalue())
        made[study] = (modality, str(ds.SeriesInstanceUID))
    query = f"{orthanc.root}/studies?PatientID={patient}&StudyDate=20240101-20241231"
    found = list_urls([query])
    want = sorted(f"{orthanc.root}/studies/{st}/series/{se}" for st, (m, se) in made.items() if m == "CT")
    assert sorted(url for url, _ in found) == want
    # one output key per series: its UID
    assert {Path(name).stem for _, name in found} == {se for m, se in made.values() if m == "CT"}
    nothing = f"{orthanc.root}/studies?PatientID=NOBODY-{patient}"
    assert list_urls([nothing]) == [(nothing, list_urls([nothing])[0][1])]  # stays one input, which fails:
    with pytest.raises(Exception, match="no CT series in the 0 studies the query matches"):
        read_series_url(nothing)


@pytest.mark.realdata
def test_tls_is_verified_unless_turned_off_by_name(orthanc, tmp_path, monkeypatch, credentials):
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "openssl is not installed (it makes the test's self-signed certificate)"
        if os.environ.get("LIVERSEG_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days",
         "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    proxy = _Proxy(orthanc.rest, tls=(cert, key))
    try:
        rest = proxy.url
        study = generate_uid()
        url = f"dicomweb+{rest}/dicom-web/studies/{study}"
        code, output = _infer(url, "--out", str(tmp_path / "a"))
        assert code == 1
        error = _errors(tmp_path / "a")[url]
        assert error.startswith(f"{url}: TLS certificate not verified (") and "LIVERSEG_DICOMWEB_INSECURE=1" in error
        monkeypatch.setenv("LIVERSEG_DICOMWEB_CA_BUNDLE", str(cert))
        code, output = _infer(url, "--out", str(tmp_path / "b"))
        assert _errors(tmp_path / "b")[url].endswith("QIDO-RS found nothing)") and "TLS verified" in output
        monkeypatch.delenv("LIVERSEG_DICOMWEB_CA_BUNDLE")
        monkeypatch.setenv("LIVERSEG_DICOMWEB_INSECURE", "1")
        code, output = _infer(url, "--out", str(tmp_path / "c"))
        assert _errors(tmp_path / "c")[url].endswith("QIDO-RS found nothing)") and "TLS NOT verified" in output
    finally:
        proxy.close()


@pytest.mark.realdata
def test_a_csv_of_urls_splits_into_parts_and_merges(orthanc, tmp_path, credentials):
    from liverseg.infer.merge import main as merge_main

    wrong = [generate_uid() for _ in range(3)]
    rows = [f"{orthanc.root}/studies/{w}" for w in wrong]
    lst = tmp_path / "studies.csv"
    lst.write_text("X\n" + "\n".join(rows) + "\n")
    out = tmp_path / "split"
    for k in range(2):
        code, output = _infer(str(lst), "--out", str(out), "--num-parts", "2", "--part-id", str(k))
        assert code == 1, output
    r = CliRunner().invoke(merge_main, [str(out)])
    assert r.exit_code == 1, r.output
    errors = _errors(out)
    assert sorted(errors) == sorted(rows)
    for url, error in errors.items():
        assert error == f"{url}: no study {url.rsplit('/', 1)[1]} on the server (QIDO-RS found nothing)"

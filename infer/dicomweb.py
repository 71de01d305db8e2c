"""DICOMweb: CT series from an image server in, each DICOM-SEG stored back (QIDO-RS, WADO-RS, STOW-RS).

Inputs (an argument of ``liverseg-infer`` or rows of a CSV list, every row a URL)::

    dicomweb+http://HOST:PORT/PATH/studies/STUDY_UID                       every CT series of the study
    dicomweb+http://HOST:PORT/PATH/studies/STUDY_UID/series/SERIES_UID     that series
    dicomweb+http://HOST:PORT/PATH/studies?PatientID=P1&StudyDate=20240101-20241231
                                         every CT series of every study the QIDO-RS query matches

``dicomweb+https://`` likewise; ``http://HOST:PORT/PATH`` is the service root (Orthanc's is
``/dicom-web``). When the run starts, each URL is expanded by QIDO-RS into its CT series,
one input each (output key: the SeriesInstanceUID); a URL that cannot be expanded (server
unreachable, no such study, no CT) stays one input, which fails with that reason while
the batch goes on. A series is fetched by WADO-RS in the server's own transfer syntax,
instance by instance from the streamed multipart answer into a temporary folder (one
instance in memory at a time), checked against the instance count QIDO-RS gave, read by
:func:`liverseg.core.dicom.read_series` like a DICOM folder, and the folder removed: from
there on the input is a DICOM series like any other.

Store (``--store dicomweb+http://HOST:PORT/PATH``): once an input's DICOM-SEG is written,
it is sent by STOW-RS into its study. Its SeriesInstanceUID and SOPInstanceUID are drawn
from the run folder's identity and the source series (:meth:`Store.uids`): a ``--resume``
that runs the input again makes the same UIDs, finds the instance on the server (QIDO-RS)
and does not send it twice; an input whose row is in the journal is not run at all.
``--store-overlay`` also sends a burned-in overlay series (a Secondary Capture image of
each slice that holds liver, :meth:`Store.put_overlay`) under the same rule.

Safe by default: credentials come from the environment (:data:`USER_ENV` and
:data:`PASSWORD_ENV`, or :data:`TOKEN_ENV` for a bearer token) or else from a netrc file
(``$NETRC``, ``~/.netrc``); a URL that carries credentials is refused, so no URL in a
log, report or ``run.json`` holds any. TLS certificates are verified unless
:data:`INSECURE_ENV` is ``1`` (:data:`CA_BUNDLE_ENV` names a CA file). Every request has a
timeout (:data:`TIMEOUT_ENV`, seconds) and a bounded retry (:data:`RETRIES_ENV`) of refused
connections, timeouts and 408/429/503/504 answers (dicomweb-client's, with backoff). Every
failure is one line: the URL and the reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import click
import numpy as np

from liverseg.core.dicom import overlay_instance, read_series
from liverseg.core.errors import DataError, UsageError, first_line
from liverseg.core.extras import install_hint
from liverseg.core.images import read_table
from liverseg.core.overlay import overlay_rgb

if TYPE_CHECKING:
    from liverseg.core.volume import Volume

__all__ = [
    "PREFIX",
    "Settings",
    "Store",
    "Target",
    "InputArgument",
    "StoreURL",
    "describe_inputs",
    "is_dicomweb",
    "list_urls",
    "parse",
    "read_series_url",
    "run_token",
    "urls_in_csv",
]

PREFIX = "dicomweb+"
USER_ENV = "LIVERSEG_DICOMWEB_USER"
PASSWORD_ENV = "LIVERSEG_DICOMWEB_PASSWORD"
TOKEN_ENV = "LIVERSEG_DICOMWEB_TOKEN"
INSECURE_ENV = "LIVERSEG_DICOMWEB_INSECURE"
CA_BUNDLE_ENV = "LIVERSEG_DICOMWEB_CA_BUNDLE"
TIMEOUT_ENV = "LIVERSEG_DICOMWEB_TIMEOUT"
RETRIES_ENV = "LIVERSEG_DICOMWEB_RETRIES"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 2
OVERLAY_BATCH = 16  # overlay images (0.8 MB each at 512x512) per STOW-RS request
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # the server's stored syntax: no transcoding there

# DICOM JSON tags of the QIDO-RS answers read here
_MODALITY, _SERIES_UID, _STUDY_UID, _SOP_UID = "00080060", "0020000E", "0020000D", "00080018"
_N_INSTANCES = "00201209"  # NumberOfSeriesRelatedInstances


def is_dicomweb(text: str | os.PathLike[str]) -> bool:
    """True for a ``dicomweb+http(s)://`` URL."""
    return str(text).lower().startswith((PREFIX + "http://", PREFIX + "https://"))


def _redacted(text: str) -> str:
    """``text`` with any ``user:password@`` removed (for the message that refuses it)."""
    return re.sub(r"(://)[^/@]*@", r"\1", text)


# ---------------------------------------------------------------- URLs


@dataclass(frozen=True)
class Target:
    """A parsed ``dicomweb+`` URL: the service root and what it names (a study, a series, a query, or nothing)."""

    service: str  # http(s)://HOST:PORT/PATH, never with credentials
    study: str | None = None
    series: str | None = None
    query: tuple[tuple[str, str], ...] = ()
    is_query: bool = False

    @property
    def url(self) -> str:
        """The canonical ``dicomweb+`` URL (what rows, logs and run.json show)."""
        s = PREFIX + self.service
        if self.is_query:
            return f"{s}/studies" + (f"?{urlencode(self.query)}" if self.query else "")
        if self.study:
            s += f"/studies/{self.study}"
        if self.series:
            s += f"/series/{self.series}"
        return s


def parse(text: str, *, root_only: bool = False) -> Target:
    """The :class:`Target` of a ``dicomweb+`` URL; a UsageError for a malformed one or one with credentials.

    ``root_only``: the URL must be a service root (``--store``), naming no study.
    """
    text = str(text).strip()
    if not is_dicomweb(text):
        raise UsageError(f"{_redacted(text)}: not a DICOMweb URL (dicomweb+http://HOST:PORT/PATH/studies/UID)")
    parts = urlsplit(text[len(PREFIX) :])
    if "@" in parts.netloc:
        raise UsageError(
            f"{_redacted(text)}: credentials in the URL are refused (they would reach logs and run.json); "
            f"set {USER_ENV} and {PASSWORD_ENV}, or {TOKEN_ENV}, or a netrc entry for the host"
        )
    if not parts.hostname or parts.fragment:
        raise UsageError(f"{text}: not a DICOMweb URL (dicomweb+http://HOST:PORT/PATH/studies/UID)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"{text}: the port is not a number") from None
    segs = [s for s in parts.path.split("/") if s]
    at = max((i for i, s in enumerate(segs) if s == "studies"), default=None)
    root = f"{parts.scheme}://{parts.netloc}" + "".join(f"/{s}" for s in (segs if at is None else segs[:at]))
    rest = [] if at is None else segs[at + 1 :]
    query = tuple(parse_qsl(parts.query, keep_blank_values=False))
    if root_only:
        if at is not None or query:
            raise UsageError(f"{text}: --store takes the service root (dicomweb+http://HOST:PORT/PATH), no study")
        return Target(root)
    if at is None:
        raise UsageError(f"{text}: names no study (dicomweb+http://HOST:PORT/PATH/studies/STUDY_UID)")
    if not rest:
        if not query:
            raise UsageError(f"{text}: a query needs at least one filter (studies?PatientID=...&StudyDate=...)")
        return Target(root, query=query, is_query=True)
    if query:
        raise UsageError(f"{text}: a study or series URL takes no query string")
    if len(rest) == 1:
        return Target(root, rest[0])
    if len(rest) == 3 and rest[1] == "series":
        return Target(root, rest[0], rest[2])
    raise UsageError(f"{text}: expected .../studies/STUDY_UID or .../studies/STUDY_UID/series/SERIES_UID")


class InputArgument(click.ParamType):
    """``liverseg-infer``'s INPUT: a ``dicomweb+`` URL (kept as text), else an existing path."""

    name = "path|url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and is_dicomweb(value):
            try:
                return parse(value).url
            except UsageError as e:
                self.fail(str(e), param, ctx)
        return click.Path(exists=True, path_type=Path).convert(value, param, ctx)


class StoreURL(click.ParamType):
    """``--store``: a ``dicomweb+`` service root, canonical (a malformed one or one with credentials is refused)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse(str(value), root_only=True).url
        except UsageError as e:
            self.fail(str(e), param, ctx)


def urls_in_csv(path: Path) -> list[str] | None:
    """The URLs of a CSV list whose first column holds ``dicomweb+`` URLs; None when it holds none.

    A list mixes no files and URLs (a UsageError says so).
    """
    t = read_table(path)
    if not t.columns:
        return None
    col = "X" if "X" in t.columns else t.columns[0]
    values = [v.strip() for v in t.column(col)]
    if is_dicomweb(col):  # a headerless list: its first URL was read as the header
        values.insert(0, col)
    urls = [v for v in values if is_dicomweb(v)]
    if not urls:
        return None
    if len(urls) != len(values):
        raise UsageError(f"{path}: lists both dicomweb+ URLs and files; give them in two runs")
    return urls


# ---------------------------------------------------------------- the connection


@dataclass(frozen=True)
class Settings:
    """Timeouts, retries, TLS and credentials, from the environment (names in the module docstring)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    verify: bool | str = True
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        try:
            timeout = float(env.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
            retries = int(env.get(RETRIES_ENV) or DEFAULT_RETRIES)
        except ValueError:
            raise UsageError(f"{TIMEOUT_ENV} must be seconds and {RETRIES_ENV} a count") from None
        if not (timeout > 0 and 0 <= retries <= 10):
            raise UsageError(f"{TIMEOUT_ENV} must be > 0 and {RETRIES_ENV} within 0..10")
        verify: bool | str = True
        if env.get(CA_BUNDLE_ENV):
            verify = env[CA_BUNDLE_ENV]
        if env.get(INSECURE_ENV) == "1":
            verify = False
        user, password = env.get(USER_ENV) or None, env.get(PASSWORD_ENV)
        if user is not None and password is None:
            raise UsageError(f"{USER_ENV} is set but {PASSWORD_ENV} is not")
        return cls(timeout, retries, verify, user, password, env.get(TOKEN_ENV) or None)

    def describe(self, service: str) -> str:
        """Where the credentials for ``service`` come from, and the TLS rule: for the log (no secret in it)."""
        if self.token:
            who = f"bearer token from {TOKEN_ENV}"
        elif self.user:
            who = f"user {self.user!r} from {USER_ENV}/{PASSWORD_ENV}"
        elif _netrc_auth(service):
            who = "credentials from netrc"
        else:
            who = "no credentials"
        tls = (
            ""
            if not service.startswith("https")
            else "; TLS " + ("NOT verified" if self.verify is False else "verified")
        )
        return f"{who}{tls}; timeout {self.timeout_s:g} s, {self.retries} retries"


def _netrc_auth(service: str) -> tuple[str, str] | None:
    from requests.utils import get_netrc_auth

    return get_netrc_auth(service)


def _requests(error: type[Exception] = DataError) -> Any:
    """The requests module, once dicomweb-client is known to be there too; ``error`` names the extra otherwise."""
    try:
        import dicomweb_client  # noqa: F401
        import requests
    except ModuleNotFoundError:
        raise error(f"DICOMweb needs dicomweb-client and requests: {install_hint('dicomweb')}") from None
    return requests


def client(service: str, settings: Settings) -> Any:
    """A DICOMwebClient on ``service`` with the settings' credentials, TLS rule, timeout and retries."""
    requests = _requests()
    from dicomweb_client.api import DICOMwebClient

    class Session(requests.Session):  # type: ignore[name-defined]
        def merge_environment_settings(self, *args: Any) -> Any:
            merged = super().merge_environment_settings(*args)
            if self.verify is not True:  # the user's CA file or INSECURE_ENV wins over $REQUESTS_CA_BUNDLE
                merged["verify"] = self.verify
            return merged

    session = Session()
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    elif settings.user:
        session.auth = (settings.user, settings.password or "")
    else:
        session.auth = _netrc_auth(service)
    session.verify = settings.verify
    if settings.verify is False:  # turned off by name (INSECURE_ENV) and said in the log: not once per request
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    # dicomweb-client retries a request that raised (refused, timed out) or was answered 408/429/503/504, with
    # exponential backoff (0.5 s, 1 s, ...); each retry's traceback in its log would only repeat the one-line reason
    logging.getLogger("retrying").setLevel(logging.ERROR)
    c = DICOMwebClient(service, session=session, timeout=(min(10.0, settings.timeout_s), settings.timeout_s))
    c.set_http_retry_params(max_attempts=settings.retries + 1, wait_exponential_multiplier=250)
    return c


def reason(e: BaseException, settings: Settings) -> str:
    """The one-line reason a DICOMweb request failed."""
    import requests
    from retrying import RetryError

    response = None
    if isinstance(e, RetryError):
        response = e.last_attempt.value if not e.last_attempt.has_exception else None
    elif isinstance(e, requests.HTTPError):
        response = e.response
    if response is not None:
        code = response.status_code
        text = f"HTTP {code} {response.reason or ''}".rstrip()
        if code == 401:
            if settings.token or settings.user or response.request.headers.get("Authorization"):
                return f"{text}: the server refused the credentials"
            return f"{text}: the server needs credentials ({USER_ENV}/{PASSWORD_ENV}, {TOKEN_ENV} or netrc)"
        if code == 403:
            return f"{text}: access refused for these credentials"
        if isinstance(e, RetryError):
            return f"{text} (after {settings.retries + 1} attempts)"
        return text
    if isinstance(e, requests.exceptions.SSLError):
        return (
            f"TLS certificate not verified ({_innermost(e)}); name the CA file in {CA_BUNDLE_ENV}, or turn "
            f"verification off with {INSECURE_ENV}=1"
        )
    if isinstance(e, requests.exceptions.Timeout):
        return f"no answer within {settings.timeout_s:g} s"
    if isinstance(e, requests.exceptions.ConnectionError):
        return f"server unreachable ({_innermost(e)})"
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return f"transfer cut short ({_innermost(e)})"
    return first_line(e)


def _innermost(e: BaseException) -> str:
    """'Connection refused' from requests' nested message, else its first line."""
    m = re.search(r"IncompleteRead\([^)]*\)", str(e))
    if m:
        return m.group(0)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(e))
    if m:
        return m.group(1).strip()
    m = re.search(r"(?:Error|error)\(['\"]([^'\"]+)", str(e))
    return m.group(1) if m else first_line(e, 160)


class _Failure(Exception):
    """A request failed: the caller words it with the URL it was about."""


def _call(settings: Settings, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a failed request becomes a DataError-ready :class:`_Failure` with its reason."""
    import requests
    from retrying import RetryError

    try:
        return fn(*args, **kwargs)
    except (requests.RequestException, RetryError) as e:
        raise _Failure(reason(e, settings)) from None


def _value(obj: dict[str, Any], tag: str) -> Any:
    v = (obj.get(tag) or {}).get("Value") or [None]
    return v[0]


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class SeriesRef:
    """One CT series on the server, as QIDO-RS described it."""

    target: Target
    n_instances: int | None

    @property
    def url(self) -> str:
        return self.target.url


def _series_of_study(c: Any, t: Target, study: str, settings: Settings) -> tuple[list[SeriesRef], list[str]]:
    """(the CT series of ``study``, the modalities of its other series); only the series ``t`` names, if any.

    A DataError when the server holds no such study (or series).
    """
    filters = {"SeriesInstanceUID": t.series} if t.series else None
    fields = ["Modality", "NumberOfSeriesRelatedInstances"]
    found = _call(settings, c.search_for_series, study, fields=fields, search_filters=filters)
    if not found:
        what = f"no series {t.series} in study {study}" if t.series else f"no study {study}"
        raise DataError(f"{t.url}: {what} on the server (QIDO-RS found nothing)")
    ct, other = [], []
    for s in found:
        modality = str(_value(s, _MODALITY) or "")
        uid = str(_value(s, _SERIES_UID) or "")
        if modality.upper() == "CT" and uid:
            n = _value(s, _N_INSTANCES)
            ct.append(SeriesRef(Target(t.service, study, uid), int(n) if n is not None else None))
        else:
            other.append(modality or "no modality")
    return sorted(ct, key=lambda r: r.target.series or ""), other


def expand(t: Target, settings: Settings) -> list[SeriesRef]:
    """The CT series a URL names (QIDO-RS); a DataError naming the URL and the reason when there are none.

    A query asks for studies with CT (``ModalitiesInStudy=CT`` unless the query says otherwise), then
    for each study's series; every series' Modality is checked here too.
    """
    c = client(t.service, settings)
    try:
        if not t.is_query:
            ct, other = _series_of_study(c, t, str(t.study), settings)
            if not ct and t.series:
                raise DataError(f"{t.url}: the series is {other[0]}, not CT")
            if not ct:
                raise DataError(f"{t.url}: no CT series in the study (its series: {', '.join(sorted(set(other)))})")
            return ct
        filters = {"ModalitiesInStudy": "CT", **dict(t.query)}
        studies = _call(settings, c.search_for_studies, search_filters=filters) or []
        out: list[SeriesRef] = []
        for uid in sorted({str(_value(st, _STUDY_UID) or "") for st in studies} - {""}):
            out += _series_of_study(c, Target(t.service, uid), uid, settings)[0]
        if not out:
            raise DataError(f"{t.url}: no CT series in the {len(studies)} studies the query matches")
        return out
    except _Failure as e:
        raise DataError(f"{t.url}: {e}") from None


def list_urls(urls: list[str]) -> list[tuple[str, str]]:
    """The run's inputs from ``dicomweb+`` URLs: (the series URL, a name its output key is made from) each.

    A URL that cannot be expanded now stays one input: reading it fails with the reason.
    A UsageError for a malformed URL, one with credentials, or without the 'dicomweb' extra.
    """
    targets = [parse(text) for text in urls]
    _requests(UsageError)
    settings = Settings.from_env()
    out: list[tuple[str, str]] = []
    for t in targets:
        try:
            refs = expand(t, settings)
        except DataError:
            out.append((t.url, _key_name(t)))
            continue
        out += [(r.url, _key_name(r.target)) for r in refs]
    return out


def describe_inputs(urls: list[str]) -> str:
    """One log line: the servers the inputs come from, with where the credentials come from (never what)."""
    settings = Settings.from_env()
    services = sorted({parse(u).service for u in urls})
    return "; ".join(f"dicomweb: {PREFIX}{s} ({settings.describe(s)})" for s in services)


def _key_name(t: Target) -> str:
    """A path-like name whose stem is the series UID (the study UID its folder), for the run's output keys."""
    if t.series:
        return f"/dicomweb/{t.study}/{t.series}.dicomweb"
    if t.study:
        return f"/dicomweb/{t.study}.dicomweb"
    return "/dicomweb/query-" + hashlib.sha256(t.url.encode()).hexdigest()[:12] + ".dicomweb"


# ---------------------------------------------------------------- fetching a series


def _instances(c: Any, ref: SeriesRef, settings: Settings) -> Iterator[Any]:
    """The series' instances, streamed (one parsed at a time)."""
    t = ref.target
    return iter(_call(settings, c.iter_series, t.study, t.series, media_types=ANY_TRANSFER_SYNTAX))


def fetch(ref: SeriesRef, folder: Path, settings: Settings) -> int:
    """Write the instances of ``ref`` into ``folder`` (one file each); their count. DataError when short."""
    import requests
    from pydicom.errors import InvalidDicomError
    from retrying import RetryError

    c = client(ref.target.service, settings)
    (folder / "instances").mkdir(exist_ok=True)
    n = 0
    try:
        it = _instances(c, ref, settings)
        while True:
            try:
                ds = next(it)
            except StopIteration:
                break
            except (requests.RequestException, RetryError, OSError) as e:
                raise _Failure(f"{reason(e, settings)}" + (f" after {n} instances" if n else "")) from None
            except (InvalidDicomError, EOFError, ValueError) as e:
                raise _Failure(f"instance {n + 1} is not readable DICOM ({first_line(e)}): truncated?") from None
            # named as WADO-RS names it: a reader's error about the file then reads as the instance's URL
            ds.save_as(folder / "instances" / _file_name(ds, n), enforce_file_format=False)
            n += 1
    except _Failure as e:
        raise DataError(f"{ref.url}: {e}") from None
    if ref.n_instances is not None and n != ref.n_instances:
        raise DataError(
            f"{ref.url}: received {n} of the {ref.n_instances} instances QIDO-RS lists (transfer cut short)"
        )
    if n == 0:
        raise DataError(f"{ref.url}: WADO-RS sent no instance")
    return n


def _file_name(ds: Any, n: int) -> str:
    """The instance's SOPInstanceUID as a file name (digits and dots), else its place in the answer."""
    uid = str(getattr(ds, "SOPInstanceUID", "") or "")
    return uid if uid and all(ch.isdigit() or ch == "." for ch in uid) and not uid.startswith(".") else f"part-{n + 1}"


def read_series_url(text: str, *, allow_gaps: bool = False) -> Volume:
    """The CT series a ``dicomweb+`` URL names, as a DICOM series :class:`Volume` (``source`` is the URL).

    The instances pass through a temporary folder (``$TMPDIR``) that is removed before this returns.
    """
    settings = Settings.from_env()
    t = parse(text)
    refs = expand(t, settings)
    if len(refs) != 1:
        raise DataError(
            f"{t.url}: {len(refs)} CT series; the run lists each on its own when the server answers as the run "
            "starts: run again (with --resume)"
        )
    ref = refs[0]
    folder = Path(tempfile.mkdtemp(prefix="liverseg-dicomweb-"))
    try:
        fetch(ref, folder, settings)
        try:
            vol = read_series(folder, allow_gaps=allow_gaps)
        except DataError as e:
            raise DataError(str(e).replace(str(folder), ref.url)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    vol.source = ref.url
    return vol


# ---------------------------------------------------------------- the store


def run_token(state_dir: Path) -> str:
    """What makes a run's SEG UIDs its own: the run folder and the time its run.json was first written."""
    import json

    created = ""
    try:
        created = str(json.loads((state_dir / "run.json").read_text(encoding="utf-8")).get("created", ""))
    except (OSError, ValueError):
        pass
    return hashlib.sha256(f"{os.path.realpath(state_dir)}\n{created}".encode()).hexdigest()


class Store:
    """``--store``: each finished DICOM-SEG sent by STOW-RS into its study, never twice (module docstring)."""

    def __init__(self, text: str, token: str, *, overlay: bool = False) -> None:
        self.target = parse(text, root_only=True)
        _requests(UsageError)
        self.settings = Settings.from_env()
        self.token = token
        self.overlay = overlay  # --store-overlay: a burned-in overlay series too (put_overlay)

    @property
    def url(self) -> str:
        return self.target.url

    def describe(self) -> str:
        also = " with a burned-in overlay series" if self.overlay else ""
        return (
            f"store: each DICOM-SEG{also} goes to {self.url} (STOW-RS; {self.settings.describe(self.target.service)})"
        )

    def uids(self, volume: Volume) -> dict[str, str]:
        """The SEG's series and SOP instance UIDs for ``volume``: the same for the same run and series."""
        from pydicom.uid import generate_uid

        source = str(volume.meta.get("series_instance_uid") or volume.source)
        return {
            "series_instance_uid": generate_uid(entropy_srcs=[self.token, source, "liverseg SEG series"]),
            "sop_instance_uid": generate_uid(entropy_srcs=[self.token, source, "liverseg SEG instance"]),
        }

    def put(self, path: Path) -> str:
        """Send the DICOM-SEG file ``path`` unless the server has it; what was done. DataError with the reason."""
        import pydicom

        ds = pydicom.dcmread(path)
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        where = f"{self.url}/studies/{study}"
        c = client(self.target.service, self.settings)
        try:
            if sop in self._present(c, study, series):
                return f"DICOM-SEG already on {where} (SOPInstanceUID {sop}): not sent again"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                answer = _call(self.settings, c.store_instances, [ds], study_instance_uid=study)
        except _Failure as e:
            raise DataError(f"{where}: DICOM-SEG not stored: {e}") from None
        failed = getattr(answer, "FailedSOPSequence", None)
        if failed:
            why = getattr(failed[0], "FailureReason", "?")
            raise DataError(f"{where}: DICOM-SEG not stored: the server refused it (failure reason {why})")
        return f"DICOM-SEG stored on {where} (SOPInstanceUID {sop})"

    def put_overlay(self, volume: Volume, gray: np.ndarray, mask: np.ndarray, software_version: str) -> str:
        """Send the burned-in overlay series of ``volume`` (a Secondary Capture image per slice that holds liver).

        ``gray`` (uint8) and ``mask`` are [K, R, C] in the model's axial view, as the writer holds
        them. Images the server already holds (same UIDs: same run and series) are not sent again;
        the rest go :data:`OVERLAY_BATCH` to a STOW-RS request. DataError with the reason.
        """
        from pydicom.uid import generate_uid

        study = str(volume.meta.get("study_instance_uid") or "")
        source = str(volume.meta.get("series_instance_uid") or volume.source)
        where = f"{self.url}/studies/{study}"
        g = volume.from_axial(gray).transpose(2, 1, 0)  # the series' sorted slices, its own rows and columns
        m = volume.from_axial(mask.view(np.uint8)).transpose(2, 1, 0)
        slices = [k for k in range(m.shape[0]) if m[k].any()]
        if not slices:
            return "overlay series: no slice holds liver, none sent"
        series = generate_uid(entropy_srcs=[self.token, source, "liverseg overlay series"])
        sops = {k: generate_uid(entropy_srcs=[self.token, source, "liverseg overlay", str(k)]) for k in slices}
        c = client(self.target.service, self.settings)
        try:
            there = self._present(c, study, series)
            todo = [k for k in slices if sops[k] not in there]
            for i in range(0, len(todo), OVERLAY_BATCH):
                batch = [
                    overlay_instance(
                        volume,
                        k,
                        overlay_rgb(np.ascontiguousarray(g[k]), m[k] != 0),
                        series_instance_uid=series,
                        sop_instance_uid=sops[k],
                        software_version=software_version,
                    )
                    for k in todo[i : i + OVERLAY_BATCH]
                ]
                answer = _call(self.settings, c.store_instances, batch, study_instance_uid=study)
                if getattr(answer, "FailedSOPSequence", None):
                    raise _Failure(f"the server refused {len(answer.FailedSOPSequence)} of {len(batch)} images")
        except _Failure as e:
            raise DataError(f"{where}: overlay series not stored: {e}") from None
        if not todo:
            return f"overlay series already on {where} ({len(slices)} images): not sent again"
        return f"overlay series stored on {where} ({len(todo)} of {len(slices)} images sent)"

    def _present(self, c: Any, study: str, series: str) -> set[str]:
        """The SOPInstanceUIDs the server holds in ``series`` of ``study`` (none when it has no such series)."""
        import requests

        try:
            found = c.search_for_instances(study, series, fields=["SOPInstanceUID"])
        except requests.HTTPError as e:
            if e.response is not None and e.response.status_code == 404:
                return set()
            raise _Failure(reason(e, self.settings)) from None
        except Exception as e:
            raise _Failure(reason(e, self.settings)) from None
        return {str(_value(f, _SOP_UID)) for f in found or []}

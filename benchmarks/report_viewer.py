"""The report viewer's budgets: report.html's size and its time to first paint in headless Chromium.

``python -m liverseg.benchmarks.report_viewer`` writes the synthetic 512x512x300 DICOM
series (:func:`liverseg.benchmarks.volume.write_synthetic_series`), runs
``liverseg-infer --report`` on it with the shipped model, then opens the report in the
system's headless Chromium (Selenium and ``chromedriver``, Debian ``chromium`` and
``chromium-driver``) ``--rounds`` times, each in a fresh tab of one browser, and prints one
row per round and the medians:

* ``size_mb``: report.html in MB (10^6 bytes); the budget is 10.
* ``first_paint_ms``: the page's first contentful paint (the Paint Timing API), from
  the navigation's start; the budget is 2,000.
* ``viewer_first_ms``: when the viewer had drawn its first slice with its overlay
  (``data-first-draw`` of the viewer, the same clock).
* ``viewer_ready_ms``: when every slice was decoded and the coronal and sagittal
  planes were whole (``data-ready``).

``--run DIR`` measures an existing run folder's report instead. The machine is named in
the output (CPU model and flags from /proc/cpuinfo): record it beside any figure.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from liverseg.core.cli import command

BUDGET_MB = 10.0
BUDGET_FIRST_PAINT_MS = 2000.0
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def browser_missing() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is not installed (pip install -e '.[dev]')"
    if not any(Path(p).exists() for p in CHROMIUM):
        return "no Chromium browser (Debian package chromium; make system-packages installs it)"
    if not any(Path(p).exists() for p in CHROMEDRIVER) and not shutil.which("chromedriver"):
        return "no chromedriver (Debian package chromium-driver; make system-packages installs it)"
    return None


def open_chromium(width: int = 1300, height: int = 1000) -> Any:
    """A Selenium driver of the system's headless Chromium (no network is needed: pages are local files)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = next(p for p in CHROMIUM if Path(p).exists())
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio"):
        opts.add_argument(arg)
    opts.add_argument(f"--window-size={width},{height}")
    driver_path = next((p for p in CHROMEDRIVER if Path(p).exists()), None) or shutil.which("chromedriver")
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))


def wait_for(driver: Any, script: str, timeout_s: float = 30.0) -> Any:
    """Poll ``script`` (a JavaScript expression) until it is truthy; its value, or TimeoutError."""
    end = time.monotonic() + timeout_s
    while True:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{script} still false after {timeout_s:g} s")
        time.sleep(0.02)


_TIMINGS = """
const paint = performance.getEntriesByName("first-contentful-paint")[0];
const v = document.querySelector(".lsv");
return {
  first_paint_ms: paint ? paint.startTime : null,
  viewer_first_ms: v && v.dataset.firstDraw ? Number(v.dataset.firstDraw) : null,
  viewer_ready_ms: v && v.dataset.readyAt ? Number(v.dataset.readyAt) : null,
  error: v ? v.dataset.error || null : "no viewer in the page",
};
"""

VIEWER_DONE = (
    "(() => { const v = document.querySelector('.lsv'); return v && (v.dataset.ready || v.dataset.error); })()"
)


def measure(report: Path, rounds: int) -> list[dict[str, Any]]:
    """One row of timings per fresh load of ``report`` (each in a new tab of one browser)."""
    driver = open_chromium()
    rows = []
    try:
        for i in range(rounds):
            driver.switch_to.new_window("tab")
            driver.get(report.resolve().as_uri())
            wait_for(driver, VIEWER_DONE)
            row = driver.execute_script(_TIMINGS)
            rows.append({"round": i, **row})
    finally:
        driver.quit()
    return rows


def cpu_name() -> str:
    """The CPU's model name, its ISA flags (the hardware's own) and the CPUs this process may use."""
    from liverseg.benchmarks.machine import cores, cpu_flags, cpu_model

    return f"{cpu_model()} ({', '.join(cpu_flags(hardware=True)) or 'no AVX2'}), {cores()} CPUs"


@command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Measure this run folder's report.html instead of making the synthetic series' run.",
)
@click.option("--rounds", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--slices", type=click.IntRange(1, 2000), default=300, show_default=True)
def main(run_dir: Path | None, rounds: int, slices: int) -> None:
    """Print report.html's size and its first-paint times in headless Chromium, with the machine."""
    why = browser_missing()
    if why:
        raise click.ClickException(why)
    with tempfile.TemporaryDirectory(prefix="liverseg-viewer-") as tmp:
        if run_dir is None:
            from liverseg.benchmarks.volume import write_synthetic_series

            series = Path(tmp) / "series"
            write_synthetic_series(series, slices, 512, (2.0, 0.7, 0.7))
            run_dir = Path(tmp) / "run"
            cmd = [sys.executable, "-c", "from liverseg.infer.cli import main; main()", str(series)]
            code = subprocess.run([*cmd, "--out", str(run_dir), "--report", "--no-progress"], check=False).returncode
            if code:
                raise click.ClickException(f"liverseg-infer exited {code}")
        report = run_dir / "report.html"
        size_mb = report.stat().st_size / 1e6
        rows = measure(report, rounds)
    click.echo(f"machine: {cpu_name()}")
    click.echo(f"report: {report} {size_mb:.2f} MB (budget {BUDGET_MB:g} MB)")
    for row in rows:
        click.echo(json.dumps(row))
    for key in ("first_paint_ms", "viewer_first_ms", "viewer_ready_ms"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            click.echo(f"median {key}: {statistics.median(values):.0f} ms over {len(values)} rounds")


if __name__ == "__main__":  # pragma: no cover
    main()

#!/usr/bin/env bash
# The Debian packages the tests drive for real (a browser, a DICOM server), installed by the test
# setup (`make system-packages`, run by `make test`). Idempotent: nothing is done when every package is
# already installed. Without root or apt-get it says what is missing and goes on; the tests that need a
# package skip with that reason on a developer's machine and fail in CI (LIVERSEG_REQUIRE_DATA=1).
set -euo pipefail

# One package per line; each line says which tests need it.
PACKAGES=(
    chromium         # tests/test_viewer_browser.py: the report's viewer in a real browser
    chromium-driver  # tests/test_viewer_browser.py: Selenium drives that browser
    orthanc          # tests/test_dicomweb.py: a real DICOM server on localhost (QIDO-RS, WADO-RS, STOW-RS)
    orthanc-dicomweb # tests/test_dicomweb.py: Orthanc's DICOMweb plugin
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-packages: not installed (needs root and apt-get): ${missing[*]}" >&2
    exit 0
fi
echo "system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

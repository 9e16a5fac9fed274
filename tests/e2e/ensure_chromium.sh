#!/bin/sh
# Debian's Chromium for the browser tests (tests/e2e), installed when it is missing.
# Playwright drives it through executable_path; `playwright install` (a browser download) is
# never used. Needs root (as on CI) or sudo.
set -eu
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "tests/e2e: $CHROMIUM is missing; installing Debian's chromium package" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
test -x "$CHROMIUM"

#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser test (tests/index_builder/report/test_report_browser.py).
# The test drives it headless on a local file: no network, no browser download of its own.
# Idempotent: nothing is printed when chromium is already there. A failed install is not fatal to
# `make test` (the browser test then skips and says why); pass --strict to make it fatal.
set -uo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1
}

echo "Installing Debian package chromium (headless browser for the HTML report test)"
# dpkg's lock may be held by another install for a while: wait for it rather than fail.
for attempt in 1 2 3; do
  if install || { apt-get update -qq >/dev/null 2>&1 && install; }; then
    exit 0
  fi
  sleep $((attempt * 10))
done

echo "could not install chromium; the browser test will be skipped" >&2
if [ "${1:-}" = "--strict" ]; then
  exit 1
fi
exit 0

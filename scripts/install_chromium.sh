#!/usr/bin/env bash
# Debian's headless Chromium + its WebDriver for the browser test (tests/test_serve_browser.py).
# Installs `chromium chromium-driver` with apt only when they are missing, apt-get exists and we are root or
# have password-less sudo. Never fails the build: without them the browser test skips and says why.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get here; the browser test will be skipped" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "install_chromium: not root and no password-less sudo; the browser test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; }; then
  echo "install_chromium: apt-get could not install chromium chromium-driver; the browser test will be skipped" >&2
fi
exit 0

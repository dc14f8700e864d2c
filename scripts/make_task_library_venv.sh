#!/usr/bin/env bash
# Builds the reference on-device client: a venv with tflite-support 0.4.4.
# It lives apart from .venv because tflite-support needs protobuf<4 while TF 2.21 needs protobuf>=5.
# Idempotent: a complete venv is left as it is and nothing is printed.
set -euo pipefail

VENV_DIR="${1:-$(cd "$(dirname "$0")/.." && pwd)/.venv-tasklib}"
TFLITE_SUPPORT_VERSION="0.4.4"
PYTHON="${PYTHON:-python3}"

venv_ready() {
  [ -x "$VENV_DIR/bin/python" ] &&
    "$VENV_DIR/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('tflite-support') != '$TFLITE_SUPPORT_VERSION')" >/dev/null 2>&1 &&
    "$VENV_DIR/bin/python" -c "from tflite_support.task import text, vision" >/dev/null 2>&1
}

libusb_present() {
  dpkg-query -W -f='${Status}' libusb-1.0-0 2>/dev/null | grep -q "install ok installed"
}

# The Task Library's native extension links against libusb (for Edge TPU support) even on CPU.
if ! libusb_present; then
  echo "Installing Debian package libusb-1.0-0 (needed by tflite-support's native library)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  fi
fi

if venv_ready; then
  exit 0
fi

echo "Creating Task Library venv in $VENV_DIR (tflite-support==$TFLITE_SUPPORT_VERSION)"
[ -x "$VENV_DIR/bin/python" ] || "$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "tflite-support==$TFLITE_SUPPORT_VERSION"

if ! venv_ready; then
  echo "tflite-support $TFLITE_SUPPORT_VERSION did not import in $VENV_DIR; see the pip output above" >&2
  exit 1
fi
echo "Task Library venv ready: $VENV_DIR"

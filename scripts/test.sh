#!/usr/bin/env bash
# The whole test suite, with the real model. Installs prerequisites, pulls the default model,
# starts a throwaway PostgreSQL (when its server binaries are present) for the PostgreSQL tests,
# and runs every test one at a time: llama.cpp threads spin, and two engines decoding at once
# on 2 cores run 10-100x slower (see DESIGN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CAREFLOW_WITH_POSTGRES=1 CAREFLOW_WITH_TRAINING=1 CAREFLOW_WITH_BROWSER=1 scripts/setup.sh

cargo build --release -p careflow-cli
target/release/careflow model pull smollm2-135m >/dev/null
# The cascade tests use a second local model as the frontier tier.
target/release/careflow model pull qwen2.5-coder-0.5b >/dev/null

PG_DIR=""
cleanup() {
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ]; then
    su postgres -s /bin/sh -c "$(ls -d /usr/lib/postgresql/*/bin | tail -1)/pg_ctl -D $PG_DIR/data -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
trap cleanup EXIT
if [ -z "${CAREFLOW_TEST_POSTGRES_URL:-}" ] && [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 \
   && PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1) && [ -n "$PG_BIN" ]; then
  PG_DIR=$(mktemp -d /tmp/careflow-pg.XXXXXX)
  chown postgres "$PG_DIR"
  PORT=55432
  su postgres -s /bin/sh -c "$PG_BIN/initdb -D $PG_DIR/data -U postgres --auth=trust >/dev/null"
  su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PG_DIR/data -o '-p $PORT -k $PG_DIR -c listen_addresses=127.0.0.1' -l $PG_DIR/log -w start >/dev/null"
  export CAREFLOW_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
  echo "test: PostgreSQL on 127.0.0.1:$PORT" >&2
fi

scripts/check-deploy.sh
# The training package's own tests (dataset checks, the GGUF export's RoPE permutation, aLoRA).
(cd training && PYTHONPATH=. "${CAREFLOW_CACHE_DIR:-$HOME/.cache/careflow}/venv/bin/python" -m pytest -q)

cargo test --release --workspace -- --test-threads=1 "$@"

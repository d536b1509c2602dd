#!/usr/bin/env bash
# The quick start: installs build prerequisites, builds careflow, pulls the default model
# (SmolLM2-135M-Instruct Q4_1) into the cache, loads the demo OMOP records into a SQLite file,
# and triages the seed message through the full workflow, printed for a person.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p careflow-cli
exec target/release/careflow demo "$@"

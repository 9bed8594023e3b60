#!/usr/bin/env bash
# Validate infra/ offline (compose and Kubernetes schemas, YAML lint, hadolint, terraform): see
# infra/validate.py. CI runs it from .ci/run; tests/test_infra.py runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" infra/validate.py "$@"

#!/usr/bin/env bash
# Creates the project's Python environment in .venv with the packages the
# tests use: the `openai` client, which tests/serve/openai_client.py runs
# against lamina-compute-node's HTTP API. Safe to run again.
#   scripts/setup-python.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_VERSION=${LAMINA_OPENAI_VERSION:-3.54.0}

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || {
        echo "setup-python: 'python3 -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    }
fi
if ! .venv/bin/python -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
fi
.venv/bin/python -c "import openai; print('setup-python: .venv has openai', openai.__version__)"

#!/usr/bin/env bash
# Set up the project's virtual environment for `make bench` / `make test` (and CI): create $VENV when it is
# missing, install PyTorch only when the environment has none (a CUDA build you installed yourself is kept),
# then install the project with its extras. Safe to run again: pip skips what is already there.
#
# Settings (environment variables):
#   VENV         the environment's folder (default .venv)
#   PYTHON       the interpreter that creates it (default python3; the project needs Python >= 3.11)
#   ZOO_TORCH    the torch requirement installed when none is importable (default torch==2.13.0: pip takes
#                the platform's default build; pass e.g. "torch --index-url <your CUDA wheel index>")
#   ZOO_EXTRAS   the project's extras (default test,ray,wandb: the W&B logger's offline test runs when it is installed)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
ZOO_TORCH=${ZOO_TORCH:-torch==2.13.0}
ZOO_EXTRAS=${ZOO_EXTRAS:-test,ray,wandb}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $PYTHON" >&2
    "$PYTHON" -m venv "$VENV"
fi
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "bootstrap: keeping torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')" >&2
else
    # Torch first: a loose torch requirement resolved with no torch installed pulls a CUDA build of several GB.
    echo "bootstrap: installing $ZOO_TORCH" >&2
    # shellcheck disable=SC2086  # ZOO_TORCH may carry pip options
    "$VENV/bin/python" -m pip install -q $ZOO_TORCH
fi
echo "bootstrap: installing mbrl-zoo[$ZOO_EXTRAS] (editable)" >&2
"$VENV/bin/python" -m pip install -q -e ".[$ZOO_EXTRAS]"

#!/usr/bin/env bash
# Creates a venv with Python bombsquad 0.1.2 (the peer examples/compare
# measures) at $1 (default: target/peers/venv). Needs python3 with venv and
# pip able to reach PyPI; exits nonzero otherwise, and compare prints a note.
set -euo pipefail
venv=${1:-target/peers/venv}
python=${PYTHON:-python3}
if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "bombsquad==0.1.2"
"$venv/bin/python" -c "import bombsquad"

#!/usr/bin/env bash
# Install dystream with its test and face extras into ./.venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[face,test,tts-gpl]"
python -m pytest -q -m "not gpu" "$@"

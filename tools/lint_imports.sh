#!/usr/bin/env bash
# The import walls of pyproject.toml ([tool.importlinter]) checked on the package as installed:
# pipelines/, evaluators/ and conf/ live at the repository root and map into lossbound.*; a plain
# `lint-imports` in a checkout sees them through the links lossbound/pipelines and
# lossbound/evaluators, and this script checks the package as a wheel installs it. Usage: tools/lint_imports.sh
# (DRAW=1 also redraws docs/imports.png).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
python -m pip install -q --no-deps --target "$tree" "$root" 2>&1 | grep -v "^WARNING: Location" || true
cd "$tree"
PYTHONPATH="$tree" lint-imports "$root/pyproject.toml" --no-cache
# the drawing of the floors (docs/imports.png): every arrow points down
if [ "${DRAW:-0}" = 1 ]; then python "$root/tools/draw_imports.py" "$tree" "$root/docs/imports.png"; fi

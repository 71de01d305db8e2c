# Sourced: make `import liverseg` work from a checkout that is not installed (a lent GPU
# machine has torch but no pip registry). The package layout that pyproject's package-dir
# builds (liverseg/ + models/ trainer/ export/ infer/ benchmarks/ mapped to liverseg.*) is
# rebuilt from symlinks in a temporary folder put on PYTHONPATH. Needs ROOT (the checkout)
# and PY; sets STAGE when it staged. Run Python from another folder than the checkout: there
# `python -m` would find the bare ./liverseg (core only) first.
if [ -n "${LIVERSEG_STAGE:-}" ] || ! (cd / && "$PY" -c "import liverseg.benchmarks.gpu, liverseg.models, liverseg.export.onnx") >/dev/null 2>&1; then
  STAGE="$(mktemp -d)"
  mkdir -p "$STAGE/liverseg"
  for f in "$ROOT"/liverseg/*; do ln -s "$f" "$STAGE/liverseg/"; done
  for pkg in models trainer export infer benchmarks; do
    [ -e "$ROOT/$pkg" ] && ln -s "$ROOT/$pkg" "$STAGE/liverseg/$pkg"
  done
  export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
  echo "liverseg not installed: using the symlinked package at $STAGE" >&2
fi

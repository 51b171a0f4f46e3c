#!/usr/bin/env bash
# The Python package's tests (python/tests) with Debian's python3, pytest
# and numpy, over the build's libdinoscope.so. Skips (77) when they are
# missing, and in the sanitizer build (an ASan library cannot be loaded into
# an uninstrumented python3 without LD_PRELOAD tricks; the C tests cover it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DS_SANITIZE:-OFF}" = ON ]; then echo "python tests: skipped in the sanitizer build"; exit 77; fi
PY=${DS_PYTHON3:-/usr/bin/python3}
if ! "$PY" -c "import pytest, numpy" 2> /dev/null; then
  echo "python tests: skipped: $PY lacks pytest or numpy (apt-get install python3-pytest python3-numpy)"
  exit 77
fi
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
export DINOSCOPE_LIBRARY=${DS_BUILD:?}/libdinoscope.so.0
exec "$PY" -m pytest -q -p no:cacheprovider -o tmp_path_retention_count=1 \
  --basetemp="${DS_TMP:-/tmp}/pytest" -rs python/tests "$@"

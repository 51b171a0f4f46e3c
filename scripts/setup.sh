#!/usr/bin/env bash
# One-command setup: installs the Debian packages dinoscope needs (apt),
# configures and builds into build/, installs the Python package into .venv,
# then runs the demo (scripts/demo.sh).
#   bash scripts/setup.sh            # everything
#   DS_SKIP_DEMO=1 bash scripts/setup.sh      # no demo
#   DS_SKIP_PYTHON=1 bash scripts/setup.sh    # no Python package in .venv
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config libopenblas-dev libvips-dev libcjson-dev libzip-dev libopenslide-dev libtiff-dev libdcmtk-dev libniftiio-dev libnifti2-dev
      python3 python3-numpy python3-venv python3-pip python3-setuptools python3-wheel python3-pytest)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

# The Python package (python/), in a virtual environment that sees Debian's
# numpy: nothing is downloaded (Debian's python3 is externally managed, PEP 668).
if [ -z "${DS_SKIP_PYTHON:-}" ]; then
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --without-pip --system-site-packages .venv
  /usr/bin/python3 -m pip --python .venv/bin/python install -q --no-index --no-build-isolation ./python
  echo "setup: python package installed in .venv (.venv/bin/python -c 'import dinoscope')"
fi

if [ -z "${DS_SKIP_DEMO:-}" ]; then
  bash scripts/demo.sh
fi

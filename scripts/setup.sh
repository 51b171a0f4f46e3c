#!/usr/bin/env bash
# One-command setup: installs the Debian packages dinoscope needs (apt),
# configures and builds into build/, then runs the demo (scripts/demo.sh).
#   bash scripts/setup.sh            # everything
#   DS_SKIP_DEMO=1 bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config libopenblas-dev libvips-dev libcjson-dev libzip-dev libopenslide-dev)
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

if [ -z "${DS_SKIP_DEMO:-}" ]; then
  bash scripts/demo.sh
fi

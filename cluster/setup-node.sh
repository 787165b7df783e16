#!/usr/bin/env bash
# Set up one node of a kdsweep cluster. cluster.yaml and cluster-local.yaml copy this folder to
# ~/kdsweep-cluster on every node (file_mounts) and run this script from their setup_commands, which
# Ray runs on the head and on every worker: all nodes get the same uv, the same Python and the same
# packages (requirements.txt beside it). Change a version here or there, then `ray up` again.
# Rerunning it changes nothing that is already as pinned.
set -euo pipefail

UV_VERSION=0.13.9
# Ray refuses a node whose Python differs from the head's, down to the patch version.
PYTHON_VERSION=3.11.7

HERE=$(cd "$(dirname "$0")" && pwd)
UV="$HOME/.local/bin/uv"
VENV="$HOME/kdsweep-venv"

installed_uv=$("$UV" --version 2>/dev/null | awk '{print $2}') || true
if [ "$installed_uv" != "$UV_VERSION" ]; then
    curl -LsSf "https://astral.sh/uv/$UV_VERSION/install.sh" | env UV_UNMANAGED_INSTALL="$HOME/.local/bin" sh
fi

# A venv left by an earlier pin (or by another Python) is replaced, never reused.
if [ "$("$VENV/bin/python" -V 2>&1)" != "Python $PYTHON_VERSION" ]; then
    "$UV" venv --clear --seed --python "$PYTHON_VERSION" "$VENV"
fi
"$UV" pip install --python "$VENV/bin/python" -r "$HERE/requirements.txt"

# Every shell on the node, and every command Ray runs there (it sources ~/.bashrc): the venv's
# python, ray and mlflow, and Ray's token authentication (the token is ~/.ray/auth_token,
# copied by file_mounts), for `ray start`, drivers and the ray CLI alike.
grep -q 'kdsweep-venv/bin' ~/.bashrc || echo 'export PATH="$HOME/kdsweep-venv/bin:$PATH"' >> ~/.bashrc
grep -q 'RAY_AUTH_MODE=token' ~/.bashrc || echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc

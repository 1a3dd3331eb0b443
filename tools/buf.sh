#!/usr/bin/env bash
# Run the buf CLI (from npm) on protos/ with offline copies of the imported
# googleapis protos. Usage: tools/buf.sh lint | tools/buf.sh breaking --against ...
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
PYTHON=${PYTHON:-.venv/bin/python}
BUF=build/node/node_modules/.bin/buf

if [ ! -x "$BUF" ]; then
  command -v npm >/dev/null || { echo "tools/buf.sh: npm is required to install buf" >&2; exit 1; }
  mkdir -p build/node
  npm install --silent --no-audit --no-fund --prefix build/node "@bufbuild/buf@$BUF_VERSION" >&2
fi

googleapis=$("$PYTHON" -c 'import google.api, pathlib; print(pathlib.Path(google.api.__path__[0]).parent)')
rm -rf build/proto-deps
mkdir -p build/proto-deps/google
for area in api rpc type; do
  mkdir -p "build/proto-deps/google/$area"
  cp "$googleapis/$area/"*.proto "build/proto-deps/google/$area/"
done

exec "$BUF" "$@"

#!/usr/bin/env bash
# Run the buf CLI (from npm) on protos/ with offline copies of the imported
# googleapis protos. Usage: tools/buf.sh lint | tools/buf.sh breaking-from REF
# (compares protos/ with those of a git commit or branch, main by default) |
# any other buf command line.
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

if [ "${1:-}" = breaking-from ]; then
  # buf cannot read the copied googleapis protos from git, so build an image
  # of REF's protos with the same copies and compare against that.
  ref=${2:-main}
  old=$(mktemp -d)
  trap 'rm -rf "$old"' EXIT
  git archive "$ref" protos buf.yaml | tar -x -C "$old"
  mkdir -p "$old/build"
  cp -r build/proto-deps "$old/build/"
  "$BUF" build "$old" -o "$old/before.binpb"
  "$BUF" build -o "$old/after.binpb"
  "$BUF" breaking "$old/after.binpb" --against "$old/before.binpb"
  echo "no breaking change against $ref"
  exit 0
fi

exec "$BUF" "$@"

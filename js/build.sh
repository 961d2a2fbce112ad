#!/usr/bin/env bash
# Builds the npm package's wasm into js/pkg/ (gitignored): the session-logic-js
# crate for wasm32-unknown-unknown, then wasm-bindgen-cli at exactly the
# wasm-bindgen version in Cargo.lock (the glue and the crate must match).
# `--target web` gives ES-module glue with `initSync({module})`: the Node entry
# (lib/node.js) feeds it the file's bytes, the edge entry (lib/edge.js) takes a
# WebAssembly.Module or bytes from the caller, so one build serves both.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$version" ]; then
  echo "wasm-bindgen not found in Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $version" ]; then
  echo "installing wasm-bindgen-cli $version (once; a few minutes)"
  cargo install wasm-bindgen-cli --version "$version"
fi

cargo build -p session-logic-js --target wasm32-unknown-unknown --release --locked
rm -rf js/pkg
wasm-bindgen --target web --no-typescript --out-dir js/pkg --out-name session_logic \
  target/wasm32-unknown-unknown/release/session_logic_js.wasm
echo "js/pkg/session_logic_bg.wasm: $(wc -c < js/pkg/session_logic_bg.wasm) bytes"

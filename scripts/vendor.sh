#!/usr/bin/env bash
# Refresh the front-end libraries under static/vendor/ from the versions pinned in
# static/vendor/package-lock.json. Only the built files are copied (and committed),
# so a machine that runs Caisson needs neither npm nor network access.
set -euo pipefail
cd "$(dirname "$0")/.."

vendor=static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$vendor/package.json" "$vendor/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

copy() {  # copy <package> <file in the package> <destination directory under static/vendor>
    mkdir -p "$vendor/$3"
    cp "$work/node_modules/$1/$2" "$vendor/$3/"
}
rm -rf "$vendor/uplot"
copy uplot dist/uPlot.iife.min.js uplot
copy uplot dist/uPlot.min.css uplot
copy uplot LICENSE uplot
echo "vendored: $(cd "$vendor" && find . -path ./node_modules -prune -o -type f -newer package-lock.json -print | sort | tr '\n' ' ')"

#!/usr/bin/env bash
# Refresh the console's terminal (xterm.js, its fit and web-links add-ons) under
# static/console/vendor/ from the versions pinned in its package-lock.json. `npm ci`
# runs on a copy of package.json and the lock (so no node_modules is left in the tree);
# only the built files (js, css, licences) are copied, and committed, so a machine
# that runs Caisson needs neither npm nor network access.
set -euo pipefail
cd "$(dirname "$0")/.."

vendor=static/console/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$vendor/package.json" "$vendor/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

copy() {  # copy <package> <file in the package> <name under static/console/vendor>
    cp "$work/node_modules/$1/$2" "$vendor/$3"
}
copy @xterm/xterm lib/xterm.js xterm.js
copy @xterm/xterm css/xterm.css xterm.css
copy @xterm/xterm LICENSE LICENSE.xterm
copy @xterm/addon-fit lib/addon-fit.js addon-fit.js
copy @xterm/addon-web-links lib/addon-web-links.js addon-web-links.js
echo "vendored into $vendor: xterm.js xterm.css addon-fit.js addon-web-links.js"

#!/usr/bin/env bash
# Run every Caisson-versus-LXC benchmark in turn, with their default run counts (a few
# minutes in all), keep the raw samples as JSON under bench/results/<timestamp>/, and end with one
# table of every goal, met or missed (bench/summary.py).
#
# Usage: bench/run_all.sh [--template busybox|debian] [--lxc-privileged] [--lxc-lxcfs-hooks]
# (the options go to every script). Needs root and LXC 5. The Python used is $PYTHON,
# else the project's .venv, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n ${PYTHON:-} ]]; then
    py=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

results="bench/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$results"

for name in start_to_exec stop exec memory load network unpack download oci_pull create backup storage console; do
    echo "== $name"
    "$py" "bench/$name.py" --json "$results/$name.json" "$@"
    echo
done
echo "== network, Debian (no network against one veth on a full system; the options above, then its template)"
"$py" bench/network.py --json "$results/network-debian.json" "$@" --template debian
echo
echo "== web"  # absolute goals, no LXC, no options of the others
"$py" bench/web.py --json "$results/web.json"
echo
echo "== Proxmox's API against Caisson's own: the same container list"
"$py" bench/pve_api.py --json "$results/pve_api.json"
echo
echo "raw samples (JSON): $results/"
echo
echo "== every goal of this run"
"$py" bench/summary.py "$results"

#!/usr/bin/env bash
# docs/performance.md's rows under load: bench.py's default and --fast on a quiet machine,
# then beside one busy process (a pure-Python loop, as a second job or a browser would be),
# with torch's default threads, with OpenMP told not to spin, and with one thread. One run,
# one condition after another (never two timings at once). Run from the repository's root:
#   bash docs/scripts/busy_cpu.sh [ITERS]
set -euo pipefail
iters=${1:-12}
bench() { echo "== $1"; shift; env "$@" python bench.py --configs tutorial default fast --iters "$iters" | grep '^| [-a-z]'; }
bench "quiet" PATH="$PATH"
python -c "while True: pass" &
busy=$!
trap 'kill $busy' EXIT
bench "one busy process beside" PATH="$PATH"
bench "one busy process beside, OMP_WAIT_POLICY=passive" OMP_WAIT_POLICY=passive
bench "one busy process beside, 1 thread (OMP_NUM_THREADS=1)" OMP_NUM_THREADS=1

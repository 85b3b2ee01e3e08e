"""Seconds of a synthetic preset's preparation (generation, split, bucketing) with nothing read from or
written to a cache, as `rrnx bench --no-cache` prepares it, without the epoch:

    python scripts/prep_seconds.py netflix-full             # 2-month steps on both sides
    python scripts/prep_seconds.py netflix-6m 1d 7d

For another commit, run it with the Python of that commit's `scripts/bench_at.sh` environment (the call
below is also dc08368's `rrnx.bench.prepare`): scripts/bench_at.sh dc08368 --preset small, then
${TMPDIR:-/tmp}/rrnx-bench-dc08368/venv/bin/python scripts/prep_seconds.py netflix-full. dc08368's
`bucketing` includes the split its data module repeats, so compare the sums (docs/benchmarks.md).
"""

import sys
import time

import rrnx
from rrnx.bench import prepare

preset = sys.argv[1] if len(sys.argv) > 1 else "netflix-full"
user_granularity, item_granularity = sys.argv[2:4] if len(sys.argv) > 3 else ("2mo", "2mo")
start = time.perf_counter()
data, timings = prepare(preset, user_granularity, item_granularity, 0, lambda line: None)
wall = time.perf_counter() - start
stages = {k: timings[k] for k in ("generation_s", "split_s", "bucketing_s")}
print(f"{rrnx.__file__}: {preset} {user_granularity}/{item_granularity}: "
      + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in stages.items())
      + f"; sum {sum(stages.values()):.1f} s, wall {wall:.1f} s; {len(data.split.train):,} train ratings")

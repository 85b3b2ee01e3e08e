"""Where a synthetic preset's generation spends its time: each function of rrnx.data.synthetic and each
call of its random generator wrapped with a clock (nested: `_sample_events` holds `_draw_events`, which
holds the `rng.*` draws it makes), seconds summed over calls, largest first.

    python scripts/generator_stages.py netflix-full
"""

import functools
import sys
import time

import numpy as np

import rrnx.data.synthetic as synthetic

SECONDS: dict[str, float] = {}
STAGES = ("_draw_world", "_item_table", "_draw_events", "_sample_events", "_signal", "_keep",
          "first_occurrences", "_truth")


def clocked(name: str, fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name] = SECONDS.get(name, 0.0) + time.perf_counter() - start
    return run


class ClockedGenerator:
    """A numpy Generator whose every method call is clocked as rng.<method>."""

    def __init__(self, rng):
        self.rng = rng

    def __getattr__(self, name):
        return clocked("rng." + name, getattr(self.rng, name))


def main(preset: str) -> None:
    for name in STAGES:
        setattr(synthetic, name, clocked(name, getattr(synthetic, name)))
    default_rng = np.random.default_rng
    synthetic.np.random.default_rng = lambda seed: ClockedGenerator(default_rng(seed))
    try:
        start = time.perf_counter()
        table, _ = synthetic.generate_preset(preset, seed=0)
        total = time.perf_counter() - start
    finally:
        synthetic.np.random.default_rng = default_rng
    print(f"{preset}: {len(table):,} ratings generated in {total:.1f} s")
    for name, seconds in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<20} {seconds:6.1f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "netflix-full")

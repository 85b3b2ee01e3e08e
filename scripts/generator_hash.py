"""A synthetic preset's generation: its seconds and a hash of the generated table, to check that a change
to the generator keeps the data and to time it against another commit:

    python scripts/generator_hash.py netflix-full
    git worktree add --detach /tmp/old COMMIT && (cd /tmp && PYTHONPATH=/tmp/old python \
        /work/main/scripts/generator_hash.py netflix-full)   # the other commit's rrnx, this venv's packages
"""

import hashlib
import sys
import time

import numpy as np

import rrnx
from rrnx.data.synthetic import generate_preset

preset = sys.argv[1] if len(sys.argv) > 1 else "netflix-full"
start = time.perf_counter()
table, _ = generate_preset(preset)
seconds = time.perf_counter() - start
digest = hashlib.sha256()
for column in table.columns:
    digest.update(np.ascontiguousarray(table[column].to_numpy()).tobytes())
print(f"{rrnx.__file__}: {preset}: {len(table):,} ratings, sha256 {digest.hexdigest()[:16]}, {seconds:.1f} s")

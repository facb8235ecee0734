"""Pure ML: models, pipelines, training, encoding, metrics. Imports no Django."""
import os

# Idle OpenMP threads sleep instead of spinning (libgomp spins by default): with one other busy
# process on a two-core worker, spinning threads made the built-in model ~15x slower
# (bench/bench_threads.py). Read when torch loads its OpenMP runtime, so set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

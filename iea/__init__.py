"""IEA, Interpretation-based Explicit Alignment: the method, free of any platform code.

Importing ``iea`` sets one process default before torch loads, unless the environment already
holds one: ``GOMP_SPINCOUNT=1000``. torch's Linux wheels run their CPU threads on GNU OpenMP,
whose idle threads busy-wait 300,000 iterations before they sleep; with two torch processes on
the same cores (a flow's worker processes, a model build beside the tests) the spinning threads
hold the cores the other process needs, and two tiny-model training loops at once took about
3x as long as with this setting, which costs a single process nothing measurable
(``benchmarks/omp_wait.py``, BENCHMARKS.md). It changes when threads sleep, not what they
compute: results are the same. libgomp reads it once, when it loads, so a process that imported
torch before ``iea`` keeps the default it had.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")

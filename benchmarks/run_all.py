"""`make bench`: every benchmark behind docs/BENCHMARKS.md, one after another.

Each benchmark is its own module (runnable alone, see its docstring); running
them in one process keeps the machine's state comparable between them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

BENCHMARKS = (
    ["benchmarks.server_index_bench", "--num_rows", "1000000", "--baselines"],
    ["benchmarks.embedding_job_bench", "--num_images", "10000", "--memory_sizes", "2000,8000"],
    ["benchmarks.ondevice_searcher_bench", "--num_items", "123000"],
    ["benchmarks.ondevice_searcher_bench", "--num_items", "123000", "--tune_on", "texts"],
    ["benchmarks.build_index_scale", "--num_rows", "1000000"],
    ["benchmarks.nightly_incremental", "--num_images", "100000"],
    ["benchmarks.incremental_index_bench", "--num_rows", "100000", "--changed_fraction", "0.01"],
    ["benchmarks.cbr_classifier_bench"],
)


def main() -> int:
    failures = 0
    for module, *args in BENCHMARKS:
        if importlib.util.find_spec(module) is None:
            print(f"skipping {module}: not present", flush=True)
            continue
        print(f"== {module} {' '.join(args)}", flush=True)
        failures += subprocess.run([sys.executable, "-m", module, *args]).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

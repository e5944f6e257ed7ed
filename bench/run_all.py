"""Re-measure every number in the README's benchmark table (`make bench`).

Runs each bench script in its own process, one after another, so they do not compete for the
cores; each prints its own markdown table. Timings are only comparable within one run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["bench_generate.py"],
    ["bench_train.py"],
    ["bench_hf_batching.py", "--threads", "2"],
    ["bench_openai_concurrency.py"],
    ["bench_smollm2.py"],
    ["bench_hf_vs_lm_eval.py"],
]


def main() -> int:
    failed = []
    for script, *args in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / script), *args], check=False).returncode
        if rc:
            failed.append(f"{script} (exit {rc})")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

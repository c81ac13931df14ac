"""Print the verifier gauntlet table (every shipped BPF program loaded into this kernel) for docs/benchmarks.md.

sudo .venv/bin/python bench/verifier_gauntlet.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from palisade.datapath.gauntlet import markdown, run


def main() -> None:
    rows = run()
    clang = subprocess.run(["clang-19", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"Kernel {platform.release()}, {clang}, {len(rows)} programs\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

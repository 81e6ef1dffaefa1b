"""The child side of ``bench.common.run_child``: ``python -m bench.worker module:function``.

Reads the keyword arguments as JSON on stdin, calls the function, and prints one line
``__BENCH_RESULT__ {"result": ..., "wall_s": ..., "peak_rss_mb": ...}``. A function that raises
``bench.common.Skipped`` reports ``{"skipped": reason}`` instead.
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def main() -> int:
    started = time.perf_counter()
    target = sys.argv[1]
    kwargs = json.loads(sys.stdin.read() or "{}")
    module_name, _, func_name = target.partition(":")
    from bench.common import MARKER, Skipped, peak_rss_mb

    try:
        result = getattr(importlib.import_module(module_name), func_name)(**kwargs)
    except Skipped as exc:
        print(MARKER + json.dumps({"skipped": str(exc)}), flush=True)
        return 0
    out = {"result": result, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}
    print(MARKER + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

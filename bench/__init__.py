"""storesync benchmarks: ``make bench`` (``python -m bench.run``), ``make bench-quick`` (``--quick``).

Each measurement runs its subjects in fresh subprocesses (wall time and peak RSS per process),
against the local vendor emulator in a subprocess of its own, on demo stores generated once and
cached under ``bench/cache/`` (keyed by size, seed and a hash of the generator's source). Results:
a table on stdout and ``bench/results.json``, one object per measurement.

Modules: ``run`` (the driver), ``common`` (subprocesses, RSS, results), ``stores`` (cached
stores), ``delivery`` (delivery, budget, bulk backfill), ``pipeline`` (pipeline memory,
incremental cost), ``ltv`` (LTV), ``parse`` (DAG parse time), ``worker`` (the child entry point).
"""

"""A local emulator of the vendors' APIs (Sendlane v2 and Sailthru) for tests and benchmarks.

Stdlib only; never imports Airflow. Start it from Python with
``storesync.emulator.testing.start_emulator()`` or from a shell with ``python -m storesync.emulator``.
"""

__version__ = "0.1.0"

__all__ = ["EmulatorServer", "start_emulator", "main"]


def __getattr__(name: str):  # lazy: importing the package does not start or import the server
    if name in ("EmulatorServer", "main"):
        from . import server

        return getattr(server, name)
    if name == "start_emulator":
        from .testing import start_emulator

        return start_emulator
    raise AttributeError(name)

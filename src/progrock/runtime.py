"""Process tuning for busy ProgRock processes: uvloop, and the garbage collector.

``runprogrock`` and ``rundelay`` call both, with the defaults. A web process
runs your ASGI server, so tuning it is your project's choice: call
:func:`tune_gc` at the end of your ``asgi.py`` (the example project does),
with other thresholds if you measured better ones.
"""

from __future__ import annotations

import gc
import logging

from progrock.tuning import GC_THRESHOLDS

logger = logging.getLogger("progrock")


def install_fast_loop() -> bool:
    """Make asyncio use uvloop if it can be imported; True if it does.

    Measured with ``benchmarks/cpu_breakdown.py 600``: the workers spend about
    15 % less CPU per update on uvloop. Without it, the standard loop is used.
    """
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    logger.debug("using uvloop")
    return True


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Collect garbage less often, and never rescan what exists at startup.

    A busy process allocates a few short-lived dicts per update; with
    Python's default thresholds (700, 10, 10) that triggers collections all
    the time, and a web process holding thousands of sockets pays for walking
    all of their objects in every full collection. This moves everything
    alive now (modules, settings, the application) out of the collector's
    reach (:func:`gc.freeze`) and applies ``thresholds`` (gen0, gen1, gen2;
    default :data:`progrock.tuning.GC_THRESHOLDS`). Reference counting still frees almost
    everything at once; only cyclic garbage waits longer. Not calling it
    leaves Python's collector as it is.

    Measured with ``benchmarks/run.py --tasks 2000``: steady p99 gap 635 → 322 ms,
    CPU per update 0.228 → 0.202 ms (docs/performance.md).
    """
    if (
        not isinstance(thresholds, (tuple, list))
        or len(thresholds) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in thresholds)
    ):
        raise ValueError(
            f"tune_gc thresholds must be three positive integers (gen0, gen1, gen2), "
            f"got {thresholds!r}"
        )
    gc.freeze()
    gc.set_threshold(*thresholds)
    logger.debug("gc thresholds %s, %d objects frozen", thresholds, gc.get_freeze_count())

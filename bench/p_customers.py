"""P5 and P6 in the harness: bench/c360.py's measurements reported as Results.

Both come from one build of the scratch data set (done by whichever runs first), so `make bench` loads
the customers once.
"""

from __future__ import annotations  # noqa: I001  (bench.harness arrives with the pipeline branch)

from bench.c360 import run
from bench.harness import BenchDB, Result

_measured: dict[tuple[str, bool], dict[str, dict]] = {}


def _both(admin_dsn: str, quick: bool) -> dict[str, dict]:
    key = (admin_dsn, quick)
    if key not in _measured:
        _measured[key] = {r["id"]: r for r in run(quick, admin_dsn)}  # builds and drops its own database
    return _measured[key]


def _result(found: dict, what: str, target: str) -> Result:
    return Result(
        id=found["id"],
        what=what,
        value=found["value"],
        baseline=found["baseline"],
        ratio=found["ratio"],
        target=target,
        ok=bool(found["ok"]),
        unit=found["unit"],
        details=found.get("detail", {}),
    )


def p5_customer_search(db: BenchDB, quick: bool) -> Result:
    found = _both(db.admin_dsn, quick)["P5"]
    return _result(
        found, f"customer search p95, {'15k' if quick else '1M'} customers", ">= 50x and p95 < 5 ms"
    )


def p6_customer_360_incremental(db: BenchDB, quick: bool) -> Result:
    found = _both(db.admin_dsn, quick)["P6"]
    return _result(
        found, f"c360 incremental after 1% change, {'15k' if quick else '1M'} customers", ">= 20x, 0 diffs"
    )


BENCHMARKS = [p5_customer_search, p6_customer_360_incremental]

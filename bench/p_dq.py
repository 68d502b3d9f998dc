"""P7 in the harness: the data-quality engine's own benchmark (bench/dq.py) reported as a Result."""

from __future__ import annotations

from bench.dq import bench_p7
from bench.harness import BenchDB, Result


def p7_dq_single_pass(db: BenchDB, quick: bool) -> Result:
    found = bench_p7(quick, dsn=db.admin_dsn)  # builds and drops its own database
    return Result(
        id="P7",
        what=f"10 DQ rules over {'100k' if quick else '1M'} rows, single pass",
        value=found["value"],
        baseline=found["baseline"],
        ratio=found["ratio"],
        target=">= 1.8x",
        ok=bool(found["ok"]),
        unit=found["unit"],
        details=found.get("detail", {}),
    )


BENCHMARKS = [p7_dq_single_pass]

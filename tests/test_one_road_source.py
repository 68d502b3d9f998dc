"""The rule of the road, checked on the source: only ops/ and db/ talk SQL.

Allowed besides: pipeline/ingest.py, pipeline/copyio.py and pipeline/arrival.py (COPY of input files
into staging and the arrival call that counts it, the fast path that is its own boundary), and
datagen/ (demo data, written in bulk). Everything else (the CLI, the console, the worker) calls ops/.
"""

from __future__ import annotations

import re
from pathlib import Path

import opsconsole

PACKAGE = Path(opsconsole.__file__).parent
ALLOWED = ("ops/", "db/", "datagen/", "pipeline/ingest.py", "pipeline/copyio.py", "pipeline/arrival.py")
TALKS_SQL = re.compile(r"\.(execute|executemany|cursor|copy)\(")


def test_only_ops_and_db_talk_sql():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TALKS_SQL.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def test_no_named_query_is_loaded_outside_ops():
    offenders = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if not path.relative_to(PACKAGE).as_posix().startswith(("ops/", "db/"))
        and re.search(r"(?<![.\w])query\(\"", path.read_text())
    ]
    assert offenders == []

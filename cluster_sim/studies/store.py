"""What a study writes into its folder: runs.parquet (rows appended to a journal as runs finish,
materialised atomically as Parquet now and then), study.json and scenario.resolved.yaml, and the
lock that lets one sweep at a time write there."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cluster_sim.studies.columns import _canonical
from cluster_sim.studies.errors import StudyLocked
from cluster_sim.studies.spec import StudyPlan

RUNS_FILE = "runs.parquet"
STUDY_FILE = "study.json"  # how the study was made (versions, command line, files, times, counts)
RESOLVED_FILE = "scenario.resolved.yaml"  # the study's scenario with its fixed overrides
JOURNAL_FILE = "runs.journal.jsonl"
AGGREGATE_FILE = "aggregate.csv"
PLOTS_DIR = "plots"
LOCK_FILE = ".sweep.lock"  # one sweep at a time writes into a study folder
_ARROW_TYPES = {"int": "int64", "float": "float64", "bool": "bool_", "str": "string", "json": "string"}


def _arrow_schema(columns: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, _ARROW_TYPES[k])()) for n, k in columns])


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
        if kind == "bool":
            return bool(value)
        if kind in ("str", "json"):
            return value if isinstance(value, str) else _canonical(value)
    except (TypeError, ValueError):
        return None
    return value


def arrow_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """The rows as a pyarrow Table with the columns' types (what runs.parquet holds)."""
    import pyarrow as pa

    schema = _arrow_schema(columns)
    arrays = [pa.array([_coerce(r.get(n), k) for r in rows], type=schema.field(n).type) for n, k in columns]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(path: Path, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(arrow_table(rows, columns), tmp)
    os.replace(tmp, path)


def read_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows recorded in DIR: runs.parquet plus any journal rows not yet in it (by run_id)."""
    out_dir = Path(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    pq_path = out_dir / RUNS_FILE
    if pq_path.is_file():
        import pyarrow.parquet as pq

        try:
            for r in pq.read_table(pq_path).to_pylist():
                rows[r["run_id"]] = r
        except Exception:  # noqa: BLE001 - a damaged file: the journal still has the rows
            pass
    journal = out_dir / JOURNAL_FILE
    if journal.is_file():
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption
                if isinstance(r, dict) and "run_id" in r:
                    rows[r["run_id"]] = r
    return list(rows.values())


class RunStore:
    """Rows of one study: appended to a journal as they finish, rewritten as Parquet now and then."""

    def __init__(self, out_dir: Path, plan: StudyPlan, flush_every_s: float = 2.0):
        self.out_dir = out_dir
        self.plan = plan
        self.columns = plan.columns()
        self.rows: dict[str, dict[str, Any]] = {}
        self.flush_every_s = flush_every_s
        self._last_flush = 0.0
        self._journal = None
        by_point = sorted(plan.runs(), key=lambda s: (s.point, plan.generations.index(s.generation), s.seed))
        self._order = {s.run_id: i for i, s in enumerate(by_point)}

    def open(self, keep: Iterable[dict[str, Any]]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for r in keep:
            self.rows[r["run_id"]] = r
        self.flush()  # runs.parquet now holds exactly the kept rows; the journal starts empty
        self._journal = open(self.out_dir / JOURNAL_FILE, "w", encoding="utf-8")  # noqa: SIM115

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["run_id"]] = row
        if self._journal is not None:
            self._journal.write(json.dumps(row, default=str) + "\n")
            self._journal.flush()
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def ordered(self) -> list[dict[str, Any]]:
        """Rows in study order: point, generation, seed."""
        return sorted(self.rows.values(), key=lambda r: self._order.get(r["run_id"], len(self._order)))

    def flush(self) -> None:
        write_parquet(self.out_dir / RUNS_FILE, self.ordered(), self.columns)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
            (self.out_dir / JOURNAL_FILE).unlink(missing_ok=True)


def clear_outputs(out_dir: Path) -> None:
    """Remove what a previous study wrote into DIR (only our files)."""
    for name in (RUNS_FILE, JOURNAL_FILE, RUNS_FILE + ".tmp", AGGREGATE_FILE, STUDY_FILE, RESOLVED_FILE):
        (out_dir / name).unlink(missing_ok=True)
    plots = out_dir / PLOTS_DIR
    if plots.is_dir():
        for png in plots.glob("*.png"):
            png.unlink()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class StudyLock:
    """One sweep at a time per study folder: an exclusive flock on DIR/.sweep.lock, which holds who
    has it (PID, host, start). The kernel drops the lock when its process dies, so the lock of a
    killed sweep is taken over by the next one. (flock, not the filelock package: filelock truncates
    the file when it tries, which would erase the holder's name that the refusal shows.)"""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock or raise StudyLocked; returns who held it before if that sweep is gone."""
        import fcntl
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                raise StudyLocked(f"{self.path.parent}: another sweep is writing into this folder "
                                  f"({_holder_text(holder)}); wait for it to end, or give another --out") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it between our open and our lock: take the new one
                os.close(fd)
                continue
            before = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.write(fd, (json.dumps(me) + "\n").encode())
            self.fd = fd
            return _holder_text(before) if before else None

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # (while still holding it: see acquire's inode check)
            os.close(self.fd)
            self.fd = None


def _holder_text(text: str) -> str:
    try:
        h = json.loads(text)
        return f"PID {h['pid']} on {h['host']}, started {h['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"

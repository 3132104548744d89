"""The SQLite files behind the default stores (``mlruns/optuna.db``, ``mlruns/mlflow.db``), checked before use.

Opening them through Optuna or MLflow is not neutral: both create their tables in any file they are given
(a read command would write) and a damaged file fails deep inside them, with a long traceback, after Ray
has started. Here a file is opened read-only with the standard ``sqlite3`` module: a read command learns
whether the study's tables are there without creating them, and ``run`` learns before it starts anything
whether each file is a sound database it may write to.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import OrchestratorError

_SQLITE = "sqlite:///"


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names; None for other URLs and in-memory databases."""
    if not url.startswith(_SQLITE):
        return None
    path = url[len(_SQLITE) :].partition("?")[0]
    path = path.removeprefix("file:")  # SQLite URI filename (sqlite:///file:x.db?mode=ro&uri=true)
    return Path(path) if path and path != ":memory:" else None


def has_tables(url: str, table: str) -> bool:
    """Whether the SQLite file behind ``url`` holds ``table`` (opened read-only: nothing is created or written)."""
    path = sqlite_file(url)
    if path is None:
        return True  # not a local file: the server's own business
    if Path(f"{path}-journal").exists():
        return True  # a killed writer's transaction: Optuna rolls it back when it opens the file (as any writer)
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return _read_only(path, sql, (table,)) is not None


def check_writable_store(url: str) -> None:
    """Refuse in one line a SQLite store that is damaged or cannot be written (``run`` writes every trial)."""
    path = sqlite_file(url)
    if path is None or not path.exists():
        return  # created by the first run (the folder's writability is checked with the tracker's)
    if Path(f"{path}-journal").exists():
        return  # a transaction a killed writer left: the next writer rolls it back, a read-only check cannot
    row = _read_only(path, "PRAGMA quick_check(1)")
    verdict = " ".join(str(row[0] if row else "no answer").replace("*** in database main ***", "").split())
    if verdict != "ok":
        raise OrchestratorError(f"{path} is damaged (SQLite: {verdict}): restore it from a backup or move it away")
    query = url.partition("?")[2]
    if "mode=ro" in query or "immutable=1" in query:
        raise OrchestratorError(f"{path} is opened read-only ({query}): `orchestrator run` writes to it")
    folder = path.resolve().parent
    if not os.access(path, os.W_OK) or not os.access(folder, os.W_OK):
        raise OrchestratorError(
            f"{path} is read-only (SQLite needs to write the file and its folder {folder}): fix the permissions"
        )


def in_memory(url: str) -> bool:
    """Whether a ``sqlite:`` URL names an in-memory database (``sqlite://``, ``sqlite:///:memory:``, SQLite's
    ``mode=memory`` URI filenames): the study's record would vanish when the process exits."""
    if not url.lower().startswith("sqlite:"):
        return False
    rest = url.partition("://")[2]
    path, _, query = rest.partition("?")
    path = path.removeprefix("/").removeprefix("file:")
    return path in ("", ":memory:") or "mode=memory" in query


def same_store_file(storage: str, tracking: str) -> Path | None:
    """The SQLite file both URLs name (by resolved path, or the same inode), None when they are apart.

    Optuna and MLflow each create their tables in any file they are given: one file for both mixes two schemas
    (MLflow's migrations then fail inside ``run``, after Optuna wrote its tables into the user's MLflow store).
    """
    a, b = sqlite_file(storage), sqlite_file(tracking)
    if a is None or b is None:
        return None
    if a.resolve() == b.resolve():
        return a
    try:
        return a if os.path.samefile(a, b) else None
    except OSError:  # one of them not created yet: different paths are different files
        return None


def _read_only(path: Path, sql: str, params: tuple = ()) -> tuple | None:
    """The first row of ``sql`` on a read-only connection; a file that is no sound database is one line."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise OrchestratorError(
            f"{path} is not a usable SQLite database ({e}): restore it from a backup or move it away"
        ) from None

"""The MLflow store: which one, is it reachable, and a client with vgtune's SQLite settings.

Every vgtune path that opens a store (the sweep's tracker, `vgtune report`,
`report.build()` called from Python) goes through `client_for`, so all of them
run SQLite in WAL mode with a busy timeout: readers (a report, the UI) never
block the sweep's writer, and a second writer waits instead of failing with
`database is locked`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlparse

from mlflow.tracking import MlflowClient

from vgtune.exceptions import VgtuneError


class TrackingError(VgtuneError, RuntimeError):
    """The tracking store could not be written at all (raised after the sweep, by `flush_all`)."""


class Unavailable(Exception):
    """Raised by a write that cannot succeed however often it is retried (recorded, not retried)."""


DEFAULT_URI = "sqlite:///mlflow.db"
# The MLflow 3 UI opens an experiment by this tag: without it, a training sweep greets
# the user in the GenAI layout (traces, evaluation runs) instead of the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
_wal_installed = False


def resolve_uri(uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _sqlite_pragmas(dbapi_conn, record) -> None:
    if type(dbapi_conn).__module__.split(".")[0] != "sqlite3":
        return
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: no fsync per commit, still crash-safe
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def use_sqlite_wal() -> None:
    """Have every SQLite connection SQLAlchemy opens from now on use WAL and a 60 s busy timeout."""
    global _wal_installed
    if not _wal_installed:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _sqlite_pragmas)
        _wal_installed = True


def client_for(uri: str) -> MlflowClient:
    """An MlflowClient for `uri`; SQLite stores get WAL mode first."""
    if uri.startswith("sqlite:"):
        use_sqlite_wal()
    return MlflowClient(uri)


def check_uri(uri: str, timeout: float = 5.0, write: bool = True) -> None:
    """Fail fast (ValueError naming the address) if the store cannot be reached, or written (`write`): a tracking
    server must answer /health within `timeout` seconds, a SQLite file's folder must take files. Folder (`file:`)
    stores, which MLflow 3 no longer opens, and other schemes are refused here, before anything starts."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"MLflow server at {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ValueError(f"MLflow tracking server {uri} is not reachable ({reason}); start it with "
                             "`make mlflow-server` or pass another --tracking-uri") from None
    elif parsed.scheme == "sqlite":
        folder = Path(sqlite_path(uri)).parent
        if write and (not folder.is_dir() or not os.access(folder, os.W_OK)):
            raise ValueError(f"tracking store {uri}: folder {folder} does not exist or is not writable")
    elif parsed.scheme in ("file", ""):
        raise ValueError(f"tracking URI {uri!r} is a folder store, which MLflow 3 no longer opens; use "
                         "sqlite:///PATH.db (`mlflow migrate-filestore` converts a folder store) or http://HOST:PORT")
    else:
        raise ValueError(f"tracking URI {uri!r}: scheme must be sqlite or http(s)")


def holds_runs(uri: str) -> bool:
    """Whether a store can hold anything to read: a server's, or a SQLite file with MLflow's tables (opened
    read-only, so that looking never creates the file that MlflowClient would)."""
    if not uri.startswith("sqlite:"):
        return True
    path = Path(sqlite_path(uri))
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        try:
            return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'"
                               ).fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:
        return False


def sqlite_path(uri: str) -> str:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """Next to a SQLite file; None (the server's choice) for a tracking server."""
    if uri.startswith("sqlite:///"):
        return (Path(sqlite_path(uri)).resolve().parent / "mlartifacts" / experiment).as_uri()
    return None


def experiment_id(client: MlflowClient, uri: str, name: str, description: str = "") -> str:
    """The experiment's id, created if needed as a model-development experiment with `description`.

    An existing experiment without the kind tag (made by an older vgtune) gets it too.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        tags = dict(EXPERIMENT_KIND)
        if description:
            tags["mlflow.note.content"] = description
        return client.create_experiment(name, artifact_location=artifact_location(uri, name), tags=tags)
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    if description and "mlflow.note.content" not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, "mlflow.note.content", description)
    return exp.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

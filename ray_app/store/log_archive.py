"""A job's log is capped in the database; older lines move to S3 in chunks (DESIGN §11).

The database keeps each job's newest `keep` lines (Settings.log_db_lines). Once a job has a
whole chunk more than that, its oldest `chunk` lines are written to one S3 object,
`logs/job-{id}/{first_seq:012d}.jsonl` in the platform's bucket (one JSON object per line: the
row as the database held it), and only then deleted from the database, in that order: a reader
finds every line in one place or the other, never in neither. Seqs are contiguous per job, so a
reader that asks for lines after `after` and gets a first row past `after + 1` (or a DB holding
none of them) knows the lines in between are archived and reads them from the chunk that holds
them (LogArchive.read): `GET /v1/jobs/{id}/logs?after=` serves every line, same seqs, same page
shape, a page from S3 at most a chunk's rest long.

Not the writer's work: the controller runs `archive` off its event loop (runtime/controller.py),
with an engine of its own; deleting archived lines never touches the lines the store appends
(those are the newest). Without S3 configured nothing moves: every line stays in the database.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.engine import Engine

from ray_app.jobs.states import JobState
from ray_app.store import db

log = logging.getLogger("ray_app.store")

Row = dict[str, Any]
_LIVE = tuple(s.value for s in JobState if not s.is_terminal)


def prefix(job_id: str) -> str:
    return f"logs/job-{job_id}/"


def chunk_key(job_id: str, first_seq: int) -> str:
    return f"{prefix(job_id)}{first_seq:012d}.jsonl"


def s3_configured(settings: Any) -> bool:
    """S3 is the platform's (an endpoint, or AWS itself): else logs stay whole in the database."""
    return bool(getattr(settings, "s3_endpoint", None)) or getattr(settings, "storage_type", "") == "s3"


def _encode(row: Row) -> str:
    return json.dumps({**row, "created_at": row["created_at"].isoformat()}, ensure_ascii=False)


def _decode(text: str) -> Row:
    row = json.loads(text)
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


class LogArchive:
    """Moves old lines to S3 (`archive`, the controller's) and reads them back (`read`, the
    API's reader). `client` is a boto3 S3 client; the bucket must exist."""

    def __init__(self, client: Any, bucket: str, keep: int = 20_000, chunk: int = 5_000, cached_chunks: int = 8):
        self.client = client
        self.bucket = bucket
        self.keep = max(1, keep)
        self.chunk = max(1, chunk)
        self._cache: OrderedDict[str, list[Row]] = OrderedDict()
        self._cached_chunks = cached_chunks
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> LogArchive | None:
        if not s3_configured(settings):
            return None
        from ray_app.storage import s3

        return cls(s3.make_client(settings), settings.s3_bucket, settings.log_db_lines, settings.log_archive_chunk)


    # ------------------------------------------------------------------ moving lines

    def archive(self, engine: Engine, job_ids: list[str] | None = None) -> int:
        """Move the oldest lines of each job over its cap (of `job_ids`, or every job: one
        scan of the table); returns how many lines moved."""
        with engine.connect() as conn:
            stmt = select(db.logs.c.job_id, func.min(db.logs.c.seq), func.max(db.logs.c.seq)).group_by(db.logs.c.job_id)
            if job_ids is not None:
                if not job_ids:
                    return 0
                stmt = stmt.where(db.logs.c.job_id.in_(job_ids))
            spans = [(job_id, low, high) for job_id, low, high in conn.execute(stmt)
                     if high - low + 1 >= self.keep + self.chunk]
        moved = 0
        for job_id, low, high in spans:
            while high - low + 1 >= self.keep + self.chunk:
                moved += self._move(engine, job_id, low, low + self.chunk - 1)
                low += self.chunk
        return moved

    def _move(self, engine: Engine, job_id: str, first: int, last: int) -> int:
        with engine.connect() as conn:
            rows = db.rows(conn.execute(select(db.logs).where(
                db.logs.c.job_id == job_id, db.logs.c.seq >= first, db.logs.c.seq <= last).order_by(db.logs.c.seq)))
        if not rows:
            return 0
        body = "".join(_encode(r) + "\n" for r in rows).encode()
        self.client.put_object(Bucket=self.bucket, Key=chunk_key(job_id, rows[0]["seq"]), Body=body,
                               ContentType="application/x-ndjson")
        with engine.begin() as conn:  # only once the object is stored
            conn.execute(delete(db.logs).where(db.logs.c.job_id == job_id, db.logs.c.seq >= rows[0]["seq"],
                                               db.logs.c.seq <= rows[-1]["seq"]))
        log.info("job %s: log lines %d-%d moved to s3://%s/%s", job_id, rows[0]["seq"], rows[-1]["seq"],
                 self.bucket, chunk_key(job_id, rows[0]["seq"]))
        return len(rows)

    def run(self, engine: Engine, interval_s: float, stop: threading.Event) -> None:
        """Archive until `stop`: every job once (one scan of the table), then every `interval_s`
        the jobs that are live or finished since the pass before (the only ones whose logs grow)."""
        since = None
        while not stop.is_set():
            started = db.utcnow()
            try:
                if since is None:
                    self.archive(engine)
                else:
                    with engine.connect() as conn:
                        ids = list(conn.execute(select(db.jobs.c.id).where(or_(
                            db.jobs.c.state.in_(_LIVE), db.jobs.c.finished_at >= since))).scalars())
                    self.archive(engine, ids)
                since = started - timedelta(seconds=interval_s)  # overlap: a late line is not missed
            except Exception:
                log.exception("moving old log lines to S3 failed; trying again in %.0fs", interval_s)
            stop.wait(interval_s)

    # ------------------------------------------------------------------ reading them back

    def read(self, job_id: str, after: int, limit: int, before: int | None = None) -> list[Row]:
        """Archived lines after `after` (and before seq `before`), at most `limit`, in order,
        from the chunk holding line `after + 1`; [] when none is archived there."""
        keys = self._keys(job_id)
        wanted = after + 1
        starts = [(int(k.rsplit("/", 1)[1].split(".")[0]), k) for k in keys]
        holding = [k for first, k in starts if first <= wanted]
        if not holding:
            return []
        rows = self._chunk(holding[-1])
        return [r for r in rows if r["seq"] > after and (before is None or r["seq"] < before)][:limit]

    def _keys(self, job_id: str) -> list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix(job_id)}
        while True:
            resp = self.client.list_objects_v2(**kwargs)
            keys += [o["Key"] for o in resp.get("Contents", [])]
            if not resp.get("IsTruncated"):
                return sorted(keys)
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def _chunk(self, key: str) -> list[Row]:
        with self._lock:
            rows = self._cache.get(key)
            if rows is not None:
                self._cache.move_to_end(key)
                return rows
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        rows = [_decode(line) for line in body.splitlines() if line]
        with self._lock:  # a chunk never changes once written
            self._cache[key] = rows
            while len(self._cache) > self._cached_chunks:
                self._cache.popitem(last=False)
        return rows


def start_archiving(settings: Any) -> threading.Event | None:
    """The controller's: a daemon thread moving old log lines to S3, with an engine of its own;
    None without S3. Set the returned event to stop it."""
    archive = LogArchive.from_settings(settings)
    if archive is None:
        return None
    stop = threading.Event()

    def run() -> None:
        from ray_app.storage import s3

        try:
            s3.ensure_bucket(archive.client, archive.bucket)
        except Exception as exc:  # the loop logs its own failures; a bucket may be made later
            log.warning("log archive: bucket %s not checked: %s", archive.bucket, exc)
        archive.run(db.make_engine(settings.resolved_database_url), settings.log_archive_interval_s, stop)

    threading.Thread(target=run, daemon=True, name="log-archive").start()
    return stop

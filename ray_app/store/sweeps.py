"""Sweeps in the job database: the reads (SQL on any engine) and the writer's operations.

A sweep is a row (`sweeps`) and its trials are jobs (`jobs.sweep_id`, `sweep_trial`): a trial is
created, retried, cancelled and read like any job. The writer keeps the rules that must hold
whoever asks: no trial is added to a sweep that is final or stopping; a stop (cancel, or a failure
a trial found) asks every live trial to stop at once, so nothing is left running even while the
sweep's Tune driver is gone; a sweep becomes final once, compare-and-set like a job.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from ray_app.jobs.errors import Conflict, StoreError
from ray_app.jobs.states import JobState
from ray_app.store import db
from ray_app.store.writer import Writer
from ray_app.sweeps import epochs
from ray_app.sweeps.models import LIVE_SWEEP_STATES, SweepState, trial_status

Row = dict[str, Any]
_LIVE_JOB_STATES = tuple(s.value for s in JobState if not s.is_terminal)
_TRIAL_COLUMNS = (db.jobs.c.id, db.jobs.c.sweep_id, db.jobs.c.sweep_trial, db.jobs.c.sweep_params,
                  db.jobs.c.state, db.jobs.c.stopped_early, db.jobs.c.error, db.jobs.c.error_type,
                  db.jobs.c.cancelled_by, db.jobs.c.created_at, db.jobs.c.finished_at)


class SweepNotFound(StoreError):
    status_code = 404


# ---------------------------------------------------------------- reads on a connection


def sweep_row(conn: Connection, sweep_id: str) -> Row:
    row = conn.execute(select(db.sweeps).where(db.sweeps.c.id == sweep_id)).first()
    if row is None:
        raise SweepNotFound(f"sweep {sweep_id} not found")
    return dict(row._mapping)


def list_sweeps(conn: Connection, project_id: str | None = None, state: str | None = None,
                cursor: int | None = None, limit: int = 50,
                projects: list[str] | None = None) -> tuple[list[Row], int | None]:
    """Newest first, as summaries (with trial counts and the best so far); `projects`: only
    these projects' (None: every project)."""
    stmt = select(db.sweeps)
    if projects is not None:
        stmt = stmt.where(db.sweeps.c.project_id.in_(projects))
    if project_id is not None:
        stmt = stmt.where(db.sweeps.c.project_id == project_id)
    if state is not None:
        stmt = stmt.where(db.sweeps.c.state == state)
    if cursor is not None:
        stmt = stmt.where(db.sweeps.c.num < cursor)
    found = db.rows(conn.execute(stmt.order_by(db.sweeps.c.num.desc()).limit(limit + 1)))
    page = found[:limit]
    trials = trials_of(conn, [s["id"] for s in page])
    return [shaped(s, trials[s["id"]]) for s in page], (page[-1]["num"] if len(found) > limit else None)


def live_sweeps(conn: Connection) -> list[Row]:
    return db.rows(conn.execute(select(db.sweeps).where(db.sweeps.c.state.in_(LIVE_SWEEP_STATES))
                                .order_by(db.sweeps.c.num)))


def trials_of(conn: Connection, sweep_ids: list[str]) -> dict[str, list[Row]]:
    """Each sweep's trials in order, each with its job's metric rows (`metric_rows`)."""
    out: dict[str, list[Row]] = defaultdict(list)
    if not sweep_ids:
        return out
    jobs = db.rows(conn.execute(select(*_TRIAL_COLUMNS).where(db.jobs.c.sweep_id.in_(sweep_ids))
                                .order_by(db.jobs.c.sweep_trial)))
    metric_rows: dict[str, list[Row]] = defaultdict(list)
    ids = [j["id"] for j in jobs]
    for start in range(0, len(ids), 500):  # bounded IN lists
        for row in db.rows(conn.execute(select(db.metrics).where(db.metrics.c.job_id.in_(ids[start:start + 500])))):
            metric_rows[row["job_id"]].append(row)
    for job in jobs:
        out[job["sweep_id"]].append({**job, "metric_rows": metric_rows[job["id"]]})
    return out


def sweep_view(conn: Connection, sweep_id: str) -> Row:
    """The sweep with every trial (GET /v1/sweeps/{id})."""
    row = sweep_row(conn, sweep_id)
    return shaped(row, trials_of(conn, [sweep_id])[sweep_id], with_trials=True)


def trial_view(job: Row, metric: str, mode: str) -> Row:
    curve = epochs.history(job["metric_rows"], metric)
    state = JobState(job["state"])
    status = trial_status(state, bool(job["stopped_early"]))
    if status == "stopped_early":
        reason = f"stopped early by the sweep's scheduler after epoch {curve[-1][0] if curve else 0}"
    elif status == "failed":
        reason = f"{job['error_type'] or 'failed'}: {job['error'] or ''}".rstrip(": ")
    elif status == "cancelled":
        reason = f"cancelled by {job['cancelled_by']}" if job["cancelled_by"] else "cancelled"
    else:
        reason = None
    return {"trial": job["sweep_trial"], "job_id": job["id"], "state": state.value, "status": status,
            "params": job["sweep_params"] or {}, "epochs_run": len(curve),
            "last_metric": curve[-1][1] if curve else None, "best_metric": epochs.best((v for _, v in curve), mode),
            "history": curve, "stop_reason": reason, "created_at": job["created_at"],
            "finished_at": job["finished_at"]}


def best_trial(trials: list[Row], mode: str) -> Row | None:
    """The best trial by its best epoch: among the succeeded trials, or among all while none has."""
    pool = [t for t in trials if t["status"] == "succeeded"] or trials
    best: Row | None = None
    for trial in pool:
        if epochs.better(trial["best_metric"], best["best_metric"] if best else None, mode):
            best = trial
    return best


def shaped(row: Row, trials: list[Row], with_trials: bool = False) -> Row:
    spec = row["spec"]
    views = [trial_view(t, spec["metric"], spec["mode"]) for t in trials]
    counts: dict[str, int] = defaultdict(int)
    for view in views:
        counts[view["status"]] += 1
    best = best_trial(views, spec["mode"])
    out = {**row, **{k: spec.get(k) for k in ("metric", "mode", "search", "scheduler", "max_concurrent", "space",
                                              "register_best_as", "seed")},
           "job": spec["job"], "num_trials": spec["planned_trials"], "counts": dict(counts),
           "best_job_id": row["best_job_id"] or (best["job_id"] if best else None),
           "best_metric": best["best_metric"] if best else None}
    if with_trials:
        out["trials"] = views
        out["best"] = next((v for v in views if v["job_id"] == out["best_job_id"]), best)
    return out


# ---------------------------------------------------------------- the writer's operations


class SweepWriter(Writer):
    # the job operations a sweep's rules use (store/core.py, the class that mixes this one in)
    def request_cancel(self, job_id: str, by: str | None = None) -> Row:
        raise NotImplementedError

    def create_sweep(self, sweep: Row) -> Row:
        """Record a new PENDING sweep (`sweep`: id, name, project_id, spec, created_by); safe to
        repeat with the same id."""
        with self.engine.begin() as conn:
            existing = conn.execute(select(db.sweeps).where(db.sweeps.c.id == sweep["id"])).first()
            if existing is not None:
                return dict(existing._mapping)
            now = db.utcnow()
            conn.execute(db.sweeps.insert().values(**sweep, state=SweepState.PENDING.value, created_at=now,
                                                   updated_at=now))
            return sweep_row(conn, sweep["id"])

    def trial_spec(self, conn: Connection, sweep_id: str, spec: Row, params: Row) -> Row:
        """A trial's job spec with its sweep, number and values; refused (409) once the sweep is
        final or stopping."""
        sweep = sweep_row(conn, sweep_id)
        if sweep["state"] not in LIVE_SWEEP_STATES or sweep["stop_requested"]:
            raise Conflict(f"sweep {sweep_id} is {sweep['stop_requested'] or sweep['state']}: no new trials")
        last = conn.execute(select(func.max(db.jobs.c.sweep_trial)).where(db.jobs.c.sweep_id == sweep_id)).scalar()
        return {**spec, "sweep_id": sweep_id, "sweep_trial": (last or 0) + 1, "sweep_params": params,
                "project_id": sweep["project_id"], "created_by": sweep["created_by"]}

    def sweep_started(self, sweep_id: str, parent_run_id: str | None = None) -> Row:
        """PENDING -> RUNNING (a driver started, or started again after a restart: no change)."""
        values: Row = {"updated_at": db.utcnow()}
        if parent_run_id:
            values["mlflow_parent_run_id"] = parent_run_id
        with self.engine.begin() as conn:
            conn.execute(update(db.sweeps).where(db.sweeps.c.id == sweep_id,
                                                 db.sweeps.c.state == SweepState.PENDING.value)
                         .values(state=SweepState.RUNNING.value, started_at=db.utcnow()))
            conn.execute(update(db.sweeps).where(db.sweeps.c.id == sweep_id,
                                                 db.sweeps.c.state.in_(LIVE_SWEEP_STATES)).values(**values))
            return sweep_row(conn, sweep_id)

    def request_sweep_stop(self, sweep_id: str, outcome: str, reason: str | None, by: str | None = None) -> Row:
        """Cancel the sweep (outcome CANCELLED) or fail it (FAILED, with `reason`): every live
        trial is asked to stop now; the sweep is final once none runs (at once if none does).
        Idempotent: the first stop asked for is the one recorded."""
        if outcome not in (SweepState.CANCELLED.value, SweepState.FAILED.value):
            raise ValueError(f"a sweep stops as CANCELLED or FAILED, not {outcome}")
        with self.engine.begin() as conn:
            sweep = sweep_row(conn, sweep_id)
            if sweep["state"] not in LIVE_SWEEP_STATES or sweep["stop_requested"]:
                return sweep
            conn.execute(update(db.sweeps).where(db.sweeps.c.id == sweep_id).values(
                stop_requested=outcome, error=reason, cancelled_by=by, updated_at=db.utcnow()))
            live = [r["id"] for r in db.rows(conn.execute(select(db.jobs.c.id).where(
                db.jobs.c.sweep_id == sweep_id, db.jobs.c.state.in_(_LIVE_JOB_STATES))))]
        for job_id in live:
            self.request_cancel(job_id, by=by or f"sweep:{sweep_id}")
        return self.settle_sweep(sweep_id)

    def settle_sweep(self, sweep_id: str) -> Row:
        """A stopping sweep whose trials have all ended takes the outcome asked for."""
        with self.engine.begin() as conn:
            sweep = sweep_row(conn, sweep_id)
            if sweep["stop_requested"] and sweep["state"] in LIVE_SWEEP_STATES and not self._live_trials(conn, sweep_id):
                self._finish(conn, sweep_id, sweep["stop_requested"], sweep["error"])
                sweep = sweep_row(conn, sweep_id)
        return sweep

    def finish_sweep(self, sweep_id: str, state: str, error: str | None = None, best_job_id: str | None = None,
                     registered_model: Row | None = None) -> Row:
        """The driver's end: SUCCEEDED or FAILED, with the best trial; a sweep already final (or
        stopping) keeps its outcome. Safe to repeat."""
        with self.engine.begin() as conn:
            sweep = sweep_row(conn, sweep_id)
            if sweep["state"] in LIVE_SWEEP_STATES and not sweep["stop_requested"]:
                self._finish(conn, sweep_id, state, error, best_job_id=best_job_id,
                             registered_model=registered_model)
            return sweep_row(conn, sweep_id)

    def _finish(self, conn: Connection, sweep_id: str, state: str, error: str | None, **values: Any) -> None:
        now = db.utcnow()
        conn.execute(update(db.sweeps).where(db.sweeps.c.id == sweep_id, db.sweeps.c.state.in_(LIVE_SWEEP_STATES))
                     .values(state=state, error=error, finished_at=now, updated_at=now, **values))

    @staticmethod
    def _live_trials(conn: Connection, sweep_id: str) -> int:
        return conn.execute(select(func.count()).select_from(db.jobs).where(
            db.jobs.c.sweep_id == sweep_id, db.jobs.c.state.in_(_LIVE_JOB_STATES))).scalar() or 0

    def live_sweeps(self) -> list[Row]:
        with self.engine.connect() as conn:
            return live_sweeps(conn)

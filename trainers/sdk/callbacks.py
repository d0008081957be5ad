"""HTTP callbacks to the backend: a blocking client and a bounded background sender.

Training must never wait on the backend (DESIGN §3): heartbeats and events are queued and a
single daemon thread delivers them in order, retrying with exponential backoff and jitter. Each
item keeps its ``event_id`` across retries, so a callback whose reply was lost is applied once
by the server. Only ``done`` is waited for: ``BackgroundSender.finish`` sends it after what is
queued, in the same request as the last of it where the backend takes batches.
"""
from __future__ import annotations

import collections
import enum
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import httpx

from . import contract
from .contract import merge_heartbeats
from .log import TraceLogger


class Outcome(enum.Enum):
    OK = "ok"
    RETRY = "retry"        # 5xx, 408/425/429, connection error, timeout
    AUTH = "auth"          # 401/403: the token is wrong; retrying cannot help
    CONFLICT = "conflict"  # 409: the job is terminal / a different done was accepted
    REJECTED = "rejected"  # any other 4xx: the body is wrong; retrying cannot help


@dataclass
class Reply:
    outcome: Outcome
    status: int | None
    data: dict[str, Any]
    reason: str


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter (half fixed, half random) so retries spread out."""
    d = min(cap, base * (2 ** min(attempt, 16)))
    return d * (0.5 + random.random() * 0.5)


class CallbackClient:
    """POSTs one callback and classifies the reply; never raises for HTTP/transport errors."""

    def __init__(self, base_url: str | None, job_id: str, token: str | None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.job_id = job_id
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # httpx clients are not shared across threads: each user of this class owns one.
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=3.0),
                                  trust_env=False)

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    def url(self, kind: str) -> str:
        return f"{self.base_url}/jobs/{self.job_id}/{kind}"  # base_url: ".../v1" (contract.callback_path)

    def post(self, kind: str, body: Mapping[str, Any]) -> Reply:
        try:
            resp = self._http.post(self.url(kind), json=body)
        except httpx.HTTPError as exc:
            return Reply(Outcome.RETRY, None, {}, f"{type(exc).__name__}: {exc}")
        try:
            data = resp.json()
            if not isinstance(data, dict):
                data = {"body": data}
        except ValueError:
            data = {}
        code = resp.status_code
        detail = data.get("detail") or data.get("error") or resp.reason_phrase
        return Reply(self.classify(code), code, data, "ok" if 200 <= code < 300 else f"HTTP {code}: {detail}")

    @staticmethod
    def classify(code: int) -> Outcome:
        if 200 <= code < 300:
            return Outcome.OK
        if code in (401, 403):
            return Outcome.AUTH
        if code == 409:
            return Outcome.CONFLICT
        if code in (408, 425, 429) or code >= 500:
            return Outcome.RETRY
        return Outcome.REJECTED

    def send_until(self, kind: str, body: Mapping[str, Any], deadline: float,
                   backoff_base: float = 0.2, backoff_cap: float = 5.0) -> Reply:
        """Retry a callback until it gets a final answer or ``deadline`` (time.monotonic) passes."""
        attempt = 0
        while True:
            reply = self.post(kind, body)
            if reply.outcome is not Outcome.RETRY:
                return reply
            delay = backoff_delay(attempt, backoff_base, backoff_cap)
            if time.monotonic() + delay > deadline:
                return reply
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()


def _result_reply(result: dict[str, Any]) -> Reply:
    """One item's result in a batch reply, as the reply to its own request would have been."""
    status = int(result.get("status") or 0)
    outcome = Outcome.OK if 200 <= status < 300 else CallbackClient.classify(status)
    data = result.get("reply") or {"detail": result.get("detail")}
    return Reply(outcome, status, data, "ok" if outcome is Outcome.OK else f"HTTP {status}: {result.get('detail')}")


def absorb_heartbeat(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The one heartbeat whose effect on the backend equals applying ``old`` then ``new``: the
    contract's merge rule (contract.merge_heartbeats). Identity (event_id, seq) stays ``new``'s."""
    return merge_heartbeats(old, new)


@dataclass
class _Item:
    kind: str  # "heartbeat" | "event" | "done" (the last, see BackgroundSender.finish)
    body: Mapping[str, Any]
    epoch: Any = None


class _Final:
    """The attempt's last callback, handed to the sender thread by ``finish``."""

    def __init__(self, kind: str, body: Mapping[str, Any], deadline: float) -> None:
        self.item = _Item(kind, body)
        self.deadline = deadline
        self.taken = False
        self.reply: Reply | None = None
        self.ready = threading.Event()


class BackgroundSender:
    """Bounded queue of heartbeats/events delivered in order by one daemon thread.

    * A newer heartbeat absorbs the newest queued (not yet in flight) heartbeat when nothing is
      lost by it: one of the same epoch (metrics merged, as the backend merges them per epoch),
      or one without metrics (a pure progress/liveness beat: only the newest state matters). A
      heartbeat carrying an earlier epoch's metrics is kept, so every epoch's metrics arrive.
      The absorbed heartbeat was never sent, so no idempotency key changes meaning; a backlog
      (backend slow or down) drains in fewer requests.
    * Events are never dropped unless the bound is hit; then the oldest heartbeat goes first.
    """

    def __init__(self, client: CallbackClient, logger: TraceLogger,
                 on_stop: Callable[[str], None], max_items: int = 10_000,
                 backoff_base: float = 0.2, backoff_cap: float = 5.0, max_batch: int = 100) -> None:
        self._client = client
        self._log = logger
        self._on_stop = on_stop
        self._max = max(2, max_items)
        self._base, self._cap = backoff_base, backoff_cap
        self._queue: collections.deque[_Item] = collections.deque()
        self._inflight: list[_Item] = []
        self._final: _Final | None = None
        self._hold_until = 0.0  # no new request before this (monotonic), unless `finish` comes
        # queued callbacks go out together (POST .../callbacks) while the backend takes them;
        # a backend without the batch route (404/405) gets them one by one from then on
        self._batch_ok = max_batch > 1
        self._max_batch = min(max_batch, contract.MAX_CALLBACK_BATCH)
        self._cond = threading.Condition()
        self._closing = False
        self._wake = threading.Event()  # interrupts a backoff sleep: close(), or once per flush()
        self._auth_logged = False
        self.delivered = 0
        self.dropped = 0
        self.coalesced = 0
        self._thread = threading.Thread(target=self._run, name="vtp-callback-sender", daemon=True)
        self._thread.start()

    # -- producer side (training thread): O(queue) at worst, never blocks on the network --
    def submit(self, kind: str, body: Mapping[str, Any], epoch: Any = None) -> None:
        item = _Item(kind, body, epoch)
        with self._cond:
            if kind == "heartbeat":
                for i in range(len(self._queue) - 1, -1, -1):
                    old = self._queue[i]
                    if old.kind == "heartbeat":
                        # a null epoch must not pick up the old one's: its metrics would land
                        # in that epoch's row, which applying the two in turn would not do
                        if old.epoch == epoch or (not old.body.get("metrics") and epoch is not None):
                            del self._queue[i]
                            item.body = absorb_heartbeat(old.body, body)
                            self.coalesced += 1
                        break  # only the most recent queued heartbeat: older ones hold other epochs
            if len(self._queue) >= self._max:
                self._drop_one()
            self._queue.append(item)
            self._cond.notify_all()

    def _drop_one(self) -> None:
        for i, old in enumerate(self._queue):
            if old.kind == "heartbeat":
                del self._queue[i]
                break
        else:
            old = self._queue.popleft()
            self._log.warning(f"callback queue full: dropped event {old.body.get('event_type')!r}")
        self.dropped += 1

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._inflight)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is delivered (or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()  # someone is waiting: retry now instead of finishing a backoff sleep
        with self._cond:
            self._hold_until = 0.0  # ... and no longer holds anything back
            self._cond.notify_all()
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 10.0) -> None:
        ok = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._wake.set()
            left = len(self._queue) + len(self._inflight)
            self._cond.notify_all()
        if not ok and left:
            self._log.warning(f"backend unreachable: {left} heartbeat/event callback(s) not delivered")
        self._thread.join(timeout=2.0)

    def hold(self, seconds: float) -> None:
        """Start no new request for up to ``seconds`` unless ``finish`` (or a flush) comes first:
        what is queued meanwhile then goes in the final callback's request. Near the end of an
        attempt this keeps the last callbacks from being in flight when ``done`` is ready; with a
        slow backend, ``done`` would wait for them, one round trip more at the very end."""
        with self._cond:
            self._hold_until = time.monotonic() + max(0.0, seconds)
            self._cond.notify_all()

    def finish(self, kind: str, body: Mapping[str, Any], take_within: float, deadline: float) -> Reply | None:
        """Send the attempt's last callback (``done``) after everything queued before it, in the
        same request as the last of it where the backend takes batches (one round trip instead of
        two at the end), retried until ``deadline``; returns its reply. None if the thread did not
        take it within ``take_within`` seconds (a backlog that will not drain): the caller sends
        it itself, as after a flush that timed out."""
        final = _Final(kind, body, deadline)
        limit = time.monotonic() + take_within
        self._wake.set()  # someone is waiting: retry now instead of finishing a backoff sleep
        with self._cond:
            self._final = final
            self._cond.notify_all()
            while not final.taken:
                left = limit - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    self._final = None
                    return None
                self._cond.wait(min(left, 0.1))
        # taken: the thread answers by the deadline (plus one request's own timeout)
        if not final.ready.wait(max(0.0, deadline - time.monotonic()) + 30.0):
            return Reply(Outcome.RETRY, None, {}, "no answer from the callback sender")
        return final.reply

    # -- consumer side (daemon thread) --
    def _run(self) -> None:
        while True:
            final = None
            with self._cond:
                while not self._closing and self._final is None:
                    if not self._queue:
                        self._cond.wait()
                        continue
                    held = self._hold_until - time.monotonic()
                    if held <= 0:
                        break
                    self._cond.wait(held)
                if not self._queue and self._final is None:
                    return
                room = self._max_batch if self._batch_ok else 1
                if self._final is not None and len(self._queue) < room:  # it fits after the rest
                    final, self._final = self._final, None
                    final.taken = True
                    self._cond.notify_all()
                take = min(len(self._queue), room)
                self._inflight = [self._queue.popleft() for _ in range(take)]
            try:
                if final is not None:
                    final.reply = (self._deliver_batch(self._inflight, final) if self._inflight
                                   else self._final_alone(final))
                elif len(self._inflight) == 1:
                    self._deliver(self._inflight[0])
                else:
                    self._deliver_batch(self._inflight)
            except Exception as exc:  # a bug here must not kill delivery of the rest
                self._log.error(f"callback sender error: {type(exc).__name__}: {exc}")
            finally:
                if final is not None:
                    final.ready.set()
            with self._cond:
                self._inflight = []
                self._cond.notify_all()

    def _deliver_batch(self, items: list[_Item], final: _Final | None = None) -> Reply | None:
        """Several queued callbacks in one request, in order, retried whole (each item keeps its
        idempotency key, so a retried batch is applied once); each item's result is handled as
        its own reply would be. With ``final`` (``done``) after them, retried until its deadline,
        and its reply returned: a backend that does not take it in a batch gets the items as it
        would without it, then ``final`` on its own route."""
        sent = [*items, final.item] if final else items
        body = contract.batch_body((item.kind, item.body) for item in sent)
        what = f"{len(items)} queued callbacks" + (f" and {final.item.kind}" if final else "")
        reply = self._post_retrying("callbacks", body, what, deadline=final.deadline if final else None)
        results = reply.data.get("results") if reply.outcome is Outcome.OK else None
        if isinstance(results, list) and len(results) == len(sent):
            self._handle_results(items, results[:len(items)])
            if final is None:
                return None
            last = _result_reply(results[-1])
            if last.status is not None and last.status < 500:
                return last
        # a retryable answer comes back only once closing or past the deadline: given up
        elif reply.outcome in (Outcome.AUTH, Outcome.RETRY):
            for item in items:  # the same answer each alone would get: not retried
                self._handle(item, reply)
            return reply if final else None
        else:  # refused as a whole (or not understood)
            if reply.status in (404, 405):
                self._batch_ok = False  # an older backend without the route
            if final and self._batch_ok and len(items) > 1:
                self._deliver_batch(items)  # only done was refused in a batch (422): the rest as one
            else:
                for item in items:
                    self._deliver(item)
        return self._final_alone(final) if final else None

    def _final_alone(self, final: _Final) -> Reply:
        return self._client.send_until(final.item.kind, final.item.body, final.deadline, self._base, self._cap)

    def _handle_results(self, items: list[_Item], results: list[dict[str, Any]]) -> None:
        for item, result in zip(items, results):
            reply = _result_reply(result)
            if reply.status is not None and reply.status >= 500:
                self._deliver(item)  # this item alone failed inside the batch: retry it alone
            else:
                self._handle(item, reply)

    def _deliver(self, item: _Item) -> None:
        self._handle(item, self._post_retrying(item.kind, item.body, f"{item.kind} callback"))

    def _post_retrying(self, kind: str, body: Mapping[str, Any], what: str,
                       deadline: float | None = None) -> Reply:
        """POST until the answer is final, with backoff; once closing or past ``deadline``, a
        retryable answer is returned as it is (the caller counts it as dropped)."""
        attempt = 0
        while True:
            reply = self._client.post(kind, body)
            if reply.outcome is not Outcome.RETRY or self._closing:
                return reply
            delay = backoff_delay(attempt, self._base, self._cap)
            if deadline is not None and time.monotonic() + delay > deadline:
                return reply
            if attempt == 0 or attempt % 10 == 0:
                self._log.warning(f"{what} failed ({reply.reason}); retrying")
            self._wake.wait(delay)
            if not self._closing:
                self._wake.clear()  # a flush's nudge wakes one sleep, it does not stop backoff
            attempt += 1

    def _handle(self, item: _Item, reply: Reply) -> None:
        """One callback's final answer (a retry that ran out at close counts as dropped)."""
        if reply.outcome is Outcome.OK:
            self.delivered += 1
            if item.kind == "heartbeat" and reply.data.get("should_continue") is False:
                self._on_stop("backend replied should_continue=false")
            return
        self.dropped += 1
        if reply.outcome is Outcome.AUTH:
            if not self._auth_logged:  # log the reason once, never retry
                self._auth_logged = True
                self._log.error(f"callback token refused ({reply.reason}); callbacks are not retried")
        elif reply.outcome is Outcome.CONFLICT:
            if item.kind == "heartbeat":
                self._on_stop("job is already terminal (HTTP 409)")
        elif reply.outcome is Outcome.REJECTED:
            self._log.warning(f"{item.kind} callback rejected: {reply.reason}")

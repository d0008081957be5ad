"""stdout log lines in the contract's format: ``[TRACE:{trace_id}] [LEVEL] message``.

Named ``log`` (not ``logging``) so that a trainer run from inside this folder never shadows the
standard library module. Known secret values are masked before anything is printed.
"""
from __future__ import annotations

import sys
import threading
from typing import Iterable

_LEVELS = {"debug", "info", "warning", "error", "critical"}


class TraceLogger:
    def __init__(self, trace_id: str, secrets: Iterable[str] = ()) -> None:
        self.trace_id = trace_id or "-"
        # Very short values would mask ordinary words; real keys/tokens are long.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._lock = threading.RLock()  # one line per record even from the sender thread

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def log(self, level: str, message: str) -> None:
        lvl = str(level).lower()
        lvl = "warning" if lvl == "warn" else lvl
        if lvl not in _LEVELS:
            lvl = "info"
        text = self.mask(str(message))
        with self._lock:
            for line in text.splitlines() or [""]:
                sys.stdout.write(f"[TRACE:{self.trace_id}] [{lvl.upper()}] {line}\n")
            sys.stdout.flush()

    def debug(self, msg: str) -> None:
        self.log("debug", msg)

    def info(self, msg: str) -> None:
        self.log("info", msg)

    def warning(self, msg: str) -> None:
        self.log("warning", msg)

    def error(self, msg: str) -> None:
        self.log("error", msg)

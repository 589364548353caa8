"""Which failures are worth retrying: decided in one place, by exception type, never by message text.

A failure is *transient* when a service (the platform database, MLflow, the broker) was
unreachable or busy: the same call may succeed later. Everything else is *permanent*:
bad input, a refused operation, or a bug. Wrapped exceptions are judged by their chain
(`__cause__`, `__context__`), so MLflow's "API request failed" around a refused
connection counts as the refused connection it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from modelyard.errors import ModelyardError, TransientError

# MLflow's error codes for "try again": its SQL store maps a dropped database connection
# to TEMPORARILY_UNAVAILABLE; a rate limit is REQUEST_LIMIT_EXCEEDED.
MLFLOW_TRANSIENT_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"})
SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary codes: extended ones & 0xFF)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # `raise ... from None` cuts the chain: what was handled there is not this error's cause
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


# The service-outage exception types, per library (module, class names); libraries not installed are skipped.
TRANSIENT_TYPES = (
    ("sqlalchemy.exc", ("DisconnectionError", "TimeoutError")),
    ("requests.exceptions", ("ConnectionError", "Timeout", "RetryError")),
    ("urllib3.exceptions", ("MaxRetryError", "NewConnectionError", "ProtocolError", "TimeoutError")),
    ("redis.exceptions", ("ConnectionError", "TimeoutError", "BusyLoadingError")),
    ("kombu.exceptions", ("OperationalError",)),
    ("psycopg", ("OperationalError",)),
)


@cache
def _transient_types() -> tuple[type[BaseException], ...]:
    """The service-outage exception types of the libraries that are installed."""
    import importlib

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in TRANSIENT_TYPES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [getattr(module, n) for n in names]
    return tuple(found)


def _is_transient_one(err: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    if isinstance(err, TransientError):
        return True
    if isinstance(err, types):
        return True
    if type(err).__name__ == "MlflowException" and getattr(err, "error_code", "") in MLFLOW_TRANSIENT_CODES:
        return True
    try:
        import sqlalchemy.exc as sa
    except ImportError:
        return False
    if isinstance(err, sa.OperationalError | sa.InterfaceError):
        if err.connection_invalidated:
            return True
        orig = err.orig
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:  # SQLite: only a busy or locked database is worth waiting for
            return code & 0xFF in SQLITE_BUSY_CODES
        return orig is None or isinstance(orig, types) or type(orig).__module__.startswith("psycopg")
    import sqlite3

    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(err, sqlite3.OperationalError) and code is not None and code & 0xFF in SQLITE_BUSY_CODES


def is_transient(err: BaseException) -> bool:
    """Whether a failure came from a service that was down or busy (worth retrying with backoff)."""
    types = _transient_types()
    return any(_is_transient_one(e, types) for e in _chain(err))


def as_transient(err: BaseException, what: str) -> TransientError:
    """The one-sentence TransientError for a transient failure while doing `what`."""
    if isinstance(err, TransientError):
        return err
    first = (str(err).splitlines() or [type(err).__name__])[0][:300]
    return TransientError(f"{what}: a service is unreachable or busy ({type(err).__name__}: {first}).")


def describe(err: BaseException) -> str:
    """One sentence for a permanent failure: a user error as it is, a bug with its type."""
    if isinstance(err, ModelyardError):
        return str(err)
    first = (str(err).splitlines() or [""])[0][:300]
    return f"failed unexpectedly: {type(err).__name__}: {first}".rstrip(": ") + "."

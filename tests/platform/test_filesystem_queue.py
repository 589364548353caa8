"""The embedded broker (queue/filesystem.py) against kombu's own filesystem transport.

Real kombu, real files, real processes: senders publish while readers drain the same folder,
as the API, beat and the workers of `modelyard up` do. kombu's sender (5.7) lets a reader take
a message file before it is written (kombu issue #1551): the stock run fails, ours delivers
every message exactly once.

`python -m tests.platform.test_filesystem_queue` prints messages/s, put then get, of both.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import filesystem as stock

from modelyard.platform.queue import filesystem as ours

QUEUE = "race"


def _options(folder: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0,  # readers poll as fast as they can: the race shows within seconds
        **extra,
    }


def _connection(transport: type, folder: Path, **extra: Any) -> Connection:
    return Connection("filesystem://", transport=transport, transport_options=_options(folder, **extra))


def _send(transport: type, folder: Path, sender: int, count: int, size: int) -> None:
    pad = "x" * size  # a big body makes the write slow: a reader finds the file empty or half written
    with _connection(transport, folder) as conn:
        producer = Producer(conn.default_channel)
        for i in range(count):
            producer.publish({"id": f"{sender}-{i}", "pad": pad}, exchange="", routing_key=QUEUE, serializer="json")


def _read(transport: type, folder: Path, deadline: float, stop: Any, out: Any) -> None:
    """Drain the queue as a Celery worker does (a consumer and drain_events); report ids and errors."""
    got: list[str] = []
    errors: list[str] = []
    try:
        with _connection(transport, folder) as conn:

            def on_message(body: dict[str, Any], message: Any) -> None:
                got.append(body["id"])
                message.ack()

            with Consumer(conn, [Queue(QUEUE, Exchange(""), routing_key=QUEUE)], callbacks=[on_message]):
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.05)
                    except TimeoutError:
                        continue
                    except Exception as err:  # a Celery worker dies here: "Unrecoverable error"
                        errors.append(repr(err))
    finally:
        out.put((got, errors))


@dataclass
class RaceResult:
    sent: list[str]
    received: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> set[str]:
        return set(self.sent) - set(self.received)

    @property
    def duplicated(self) -> list[str]:
        return [k for k, n in Counter(self.received).items() if n > 1]


def race(
    transport: type, folder: Path, senders: int = 3, count: int = 30, size: int = 256 * 1024, readers: int = 5
) -> RaceResult:
    """`senders` processes publish `count` messages each while `readers` processes drain the queue."""
    folder.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    out, stop = ctx.Queue(), ctx.Event()
    result = RaceResult(sent=[f"{s}-{i}" for s in range(senders) for i in range(count)])
    start = time.monotonic()
    deadline = start + 30
    reading = [ctx.Process(target=_read, args=(transport, folder, deadline, stop, out)) for _ in range(readers)]
    sending = [ctx.Process(target=_send, args=(transport, folder, s, count, size)) for s in range(senders)]
    for p in reading + sending:
        p.start()
    for p in sending:
        p.join(deadline - time.monotonic())
    while time.monotonic() < deadline and any(name.endswith(f".{QUEUE}.msg") for name in os.listdir(folder)):
        time.sleep(0.01)
    time.sleep(0.2)  # the readers hand over what they took last
    stop.set()
    for _ in reading:
        got, errors = out.get(timeout=max(deadline - time.monotonic(), 0) + 10)
        result.received += got
        result.errors += errors
    for p in reading + sending:
        p.join(10)
    result.seconds = time.monotonic() - start
    return result


def test_stock_kombu_loses_messages_and_chokes_under_this_load(tmp_path: Path) -> None:
    """The bug reproduced: kombu's reader takes files its sender has not written yet (kombu #1551)."""
    result = race(stock.Transport, tmp_path / "queue")
    print(_summary("kombu stock", result))
    assert result.lost
    assert any("JSONDecodeError" in e for e in result.errors)


def test_concurrent_senders_and_readers_deliver_each_message_once(tmp_path: Path) -> None:
    """The same load on ours: every message delivered, exactly once, and no reader error."""
    result = race(ours.Transport, tmp_path / "queue")
    print(_summary("modelyard", result))
    assert result.errors == []
    assert not result.lost
    assert not result.duplicated
    assert sorted(result.received) == sorted(result.sent)
    assert _left(tmp_path / "queue") == []  # no temporary file left behind


def _summary(label: str, r: RaceResult) -> str:
    return (
        f"{label:24} received {len(r.received)}/{len(r.sent)}, lost {len(r.lost)}, "
        f"duplicated {len(r.duplicated)}, errors {len(r.errors)} {r.errors[:1]}, {r.seconds:.1f} s"
    )


def _left(folder: Path) -> list[str]:
    """The files left in a queue folder (the control folder aside, made on the first bind)."""
    return sorted(n for n in os.listdir(folder) if n != "control")


def _publish(transport: type, folder: Path, body: dict[str, Any], **extra: Any) -> None:
    with _connection(transport, folder, **extra) as conn:
        Producer(conn.default_channel).publish(body, exchange="", routing_key=QUEUE, serializer="json")


def _get(transport: type, folder: Path, **extra: Any) -> Any:
    with _connection(transport, folder, **extra) as conn:
        message = conn.default_channel.basic_get(QUEUE, no_ack=True)
        return None if message is None else message.decode()


def test_messages_cross_between_stock_and_ours(tmp_path: Path) -> None:
    """A home keeps its queued messages, and an older process shares the folder during an upgrade."""
    folder = tmp_path / "queue"
    folder.mkdir()
    _publish(stock.Transport, folder, {"from": "stock"})
    _publish(stock.Transport, folder, {"from": "stock"})
    with _connection(ours.Transport, folder) as conn:
        assert conn.default_channel._size(QUEUE) == 2
    assert _get(ours.Transport, folder) == {"from": "stock"}
    assert _get(ours.Transport, folder) == {"from": "stock"}
    _publish(ours.Transport, folder, {"from": "ours"})
    with _connection(stock.Transport, folder) as conn:
        assert conn.default_channel._size(QUEUE) == 1
    assert _get(stock.Transport, folder) == {"from": "ours"}
    assert _get(ours.Transport, folder) is None
    assert _left(folder) == []


def test_an_unwritten_file_waits_for_a_later_poll(tmp_path: Path) -> None:
    """An empty or half-written `.msg` (kombu's sender at work) is neither raised nor lost."""
    folder, elsewhere = tmp_path / "queue", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    _publish(stock.Transport, elsewhere, {"whole": True})
    (written,) = [p for p in elsewhere.iterdir() if p.suffix == ".msg"]
    data = written.read_bytes()
    path = folder / written.name
    path.write_bytes(b"")  # created, not written yet
    assert _get(ours.Transport, folder) is None
    path.write_bytes(data[: len(data) // 2])  # half written
    assert _get(ours.Transport, folder) is None
    _publish(ours.Transport, folder, {"after": 1})  # a later message is not held up by it
    assert _get(ours.Transport, folder) == {"after": 1}
    path.write_bytes(data)  # written: delivered at the next poll
    assert _get(ours.Transport, folder) == {"whole": True}
    assert _left(folder) == []


def test_a_file_broken_for_good_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A writer that died mid-write leaves a file that never parses: set aside, logged, out of the way."""
    folder = tmp_path / "queue"
    folder.mkdir()
    path = folder / f"0_abc.{QUEUE}.msg"  # "0_" sorts before every name kombu makes: it is looked at first
    path.write_bytes(b'{"body": ')
    assert _get(ours.Transport, folder, corrupt_after=3600) is None
    assert path.exists()
    old = time.time() - 120
    os.utime(path, (old, old))
    _publish(ours.Transport, folder, {"next": 1})
    with caplog.at_level(logging.ERROR, logger=ours.__name__):
        assert _get(ours.Transport, folder, corrupt_after=60) == {"next": 1}
    assert _left(folder) == [f".0_abc.{QUEUE}.msg.corrupt"]
    assert "did not parse" in caplog.text
    assert _get(stock.Transport, folder) is None  # kombu's reader skips it too


def test_a_sender_that_died_mid_write_leaves_nothing_readable(tmp_path: Path) -> None:
    """Its temporary file is invisible to every reader, and removed once it is an hour old."""
    folder = tmp_path / "queue"
    folder.mkdir()
    fresh = folder / f".2_def.{QUEUE}.msg.tmp"
    stale = folder / f".1_abc.{QUEUE}.msg.tmp"
    fresh.write_bytes(b'{"half')
    stale.write_bytes(b'{"half')
    old = time.time() - ours.STALE_TEMP_AFTER - 60
    os.utime(stale, (old, old))
    assert _get(stock.Transport, folder) is None
    assert _get(ours.Transport, folder) is None
    assert fresh.exists()
    assert not stale.exists()


def test_store_processed_keeps_one_copy(tmp_path: Path) -> None:
    folder, processed = tmp_path / "queue", tmp_path / "processed"
    folder.mkdir()
    _publish(ours.Transport, folder, {"n": 1})
    options = {"store_processed": True, "processed_folder": str(processed)}
    assert _get(ours.Transport, folder, **options) == {"n": 1}
    assert _get(ours.Transport, folder, **options) is None
    assert len(os.listdir(processed)) == 1
    assert os.listdir(processed)[0].endswith(f".{QUEUE}.msg")
    assert _left(folder) == []


def test_without_fsync_messages_still_arrive(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    _publish(ours.Transport, folder, {"n": 1}, fsync=False)
    assert _get(ours.Transport, folder) == {"n": 1}


def test_embedded_app_sends_and_reads_with_this_transport(settings: Any) -> None:
    """create_app gives every sender and worker the transport; server mode keeps its URL's."""
    from modelyard.platform.queue.app import EXPORT_TASK, create_app
    from modelyard.platform.settings import Settings

    app = create_app(settings)
    for conn in (app.connection_for_write(), app.connection_for_read()):
        with conn:
            assert isinstance(conn.transport, ours.Transport)
    app.send_task(EXPORT_TASK, args=["r-1"])
    names = [n for n in os.listdir(settings.queue_folder) if n.endswith(".msg")]
    assert len(names) == 1
    assert names[0].endswith(".export.msg")
    with app.connection_for_read() as conn:
        message = conn.default_channel.basic_get("export", no_ack=True)
        assert message.headers["task"] == EXPORT_TASK
    server = create_app(Settings(home=settings.home, broker_url="redis://127.0.0.1:1/0"))
    assert server.connection_for_write().transport_cls == "redis"


def _throughput(transport: type, folder: Path, count: int, size: int, **extra: Any) -> tuple[float, float]:
    folder.mkdir(parents=True)
    body = {"pad": "x" * size}
    with _connection(transport, folder, **extra) as conn:
        channel = conn.default_channel
        producer = Producer(channel)
        start = time.perf_counter()
        for _ in range(count):
            producer.publish(body, exchange="", routing_key=QUEUE, serializer="json")
        put = count / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(count):
            assert channel.basic_get(QUEUE, no_ack=True) is not None
        get = count / (time.perf_counter() - start)
    return put, get


def main(rounds: int = 5) -> None:
    """Messages/s, put N then get N in one process, kombu's and ours taking turns; median of `rounds`."""
    import statistics
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="modelyard-fsq-"))
    kinds: list[tuple[str, type, dict[str, Any]]] = [
        ("kombu stock", stock.Transport, {}),
        ("modelyard", ours.Transport, {}),
        ("modelyard fsync=False", ours.Transport, {"fsync": False}),
    ]
    print(f"one process, put N then get N, median of {rounds} rounds taking turns, in {root}")
    for size, count in ((2 * 1024, 500), (256 * 1024, 100)):
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in kinds}
        for r in range(rounds):
            for label, transport, extra in kinds:
                folder = root / f"{label}-{size}-{r}".replace(" ", "_")
                runs[label].append(_throughput(transport, folder, count, size, **extra))
        for label, results in runs.items():
            put = statistics.median(p for p, _ in results)
            get = statistics.median(g for _, g in results)
            print(f"  {label:22} {size // 1024:4d} KiB x {count:4d}: put {put:7.0f} msg/s   get {get:7.0f} msg/s")
    print("race: 3 senders x 30 messages of 256 KiB, 5 readers")
    for label, transport, _ in kinds[:2]:
        print("  " + _summary(label, race(transport, root / f"race-{label}".replace(" ", "_"))))


if __name__ == "__main__":
    try:
        main()
    except queue_module.Empty:
        raise SystemExit("a reader process did not report") from None

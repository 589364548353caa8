"""The embedded mode's broker: kombu's filesystem transport, with whole messages only.

kombu's own sender (kombu.transport.filesystem, 5.7) opens `<ms>_<uuid>.<queue>.msg` and
then writes into it, so a reader polling the folder can take the file while it is still
empty or half written: it moves the file away, deletes it and fails on the JSON
(`JSONDecodeError`, kombu issue #1551). The worker stops with "Unrecoverable error" and the
message is gone, since the sender goes on writing into a file that no longer has a name.

This transport keeps the folder, the file names and the options of kombu's, and changes
how a file is written and taken:

- `_put` writes the message to a hidden temporary name that no reader lists
  (`.<name>.tmp`), fsyncs it, and renames it to its `.msg` name in the same folder
  (atomic), then fsyncs the folder: a reader sees a whole message or nothing, even after
  a power cut. (Option `fsync=False` skips the two fsyncs.)
- `_get` reads a candidate where it lies and takes it only once its JSON is whole; the
  unlink (or the rename, with `store_processed`) decides which reader gets it, so each
  message goes to exactly one reader. A file that does not parse is left for a later poll
  (kombu's sender, in an older process, may still be writing it); one still broken after
  `corrupt_after` seconds (its writer died) is renamed `.<name>.corrupt`, out of every
  reader's way, and logged, never raised. Nothing goes through the temporary folder, which
  may be another file system (where kombu's `shutil.move` copies, and two readers can both
  get a message).

Files queued by kombu's transport read as before, and kombu's readers skip the hidden
names, so a home can be shared with an older process while it is upgraded.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from contextlib import suppress
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"  # `.<name>.tmp`: kombu matches `<anything>.<queue>.msg` only
CORRUPT_SUFFIX = ".corrupt"
CLAIM_SUFFIX = ".claim"
CORRUPT_AFTER = 60.0  # seconds a message file may stay unparseable before it is set aside
STALE_TEMP_AFTER = 3600.0  # a temporary file this old belongs to a sender that died mid-write


def message_name(queue: str) -> str:
    """kombu's file name for a new message: oldest first when sorted, as kombu reads them."""
    return f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"


class Channel(kombu_filesystem.Channel):
    """kombu's filesystem channel, sending by rename and reading only whole messages."""

    # the ignore: kombu's own signatures disagree (`payload` in its filesystem Channel, `message` in the base)
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write `payload` under a hidden name, then rename it into the queue."""
        folder = self.data_folder_out
        name = message_name(queue)
        final = os.path.join(folder, name)
        temp = os.path.join(folder, f".{name}{TEMP_SUFFIX}")
        data = str_to_bytes(dumps(payload))
        try:
            try:
                with open(temp, "xb") as f:
                    f.write(data)
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                os.rename(temp, final)
            except BaseException:
                with suppress(OSError):
                    os.remove(temp)
                raise
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc
        if self.fsync:  # the rename outlives a power cut; the message is sent either way
            with suppress(OSError):
                _fsync_folder(folder)

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """The oldest whole message of `queue`, taken by this reader alone."""
        folder = self.data_folder_in
        wanted = f"{queue}.msg"
        names = sorted(os.listdir(folder))
        for name in names:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                self._remove_stale_temp(os.path.join(folder, name))
                continue
            if name.partition(".")[2] != wanted:
                continue
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue  # another reader took it
            except OSError as exc:
                raise ChannelError(f"Cannot read file {path!r} from queue.") from exc
            payload = _parse(raw)
            if payload is None:
                self._unparseable(path, name)
                continue
            if self._take(path, name):
                return payload
        raise Empty()

    def _take(self, path: str, name: str) -> bool:
        """Remove the message file; True if this reader removed it (exactly one does)."""
        try:
            if not self.store_processed:
                os.remove(path)
                return True
            claimed = os.path.join(os.path.dirname(path), f".{name}.{uuid.uuid4().hex}{CLAIM_SUFFIX}")
            os.rename(path, claimed)  # same folder: atomic, one reader wins
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ChannelError(f"Cannot take file {path!r} from queue.") from exc
        try:
            os.makedirs(self.processed_folder, exist_ok=True)
            shutil.move(claimed, os.path.join(self.processed_folder, name))
        except OSError:  # the message is ours already: a backup that failed must not lose it
            log.warning("could not keep processed message %s in %s", name, self.processed_folder, exc_info=True)
        return True

    def _unparseable(self, path: str, name: str) -> None:
        """Leave a file that does not parse for a later poll; set it aside once it is old."""
        try:
            age = time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            return
        if age < self.corrupt_after:
            return  # its writer (kombu's own sender, in an older process) may be at work
        aside = os.path.join(os.path.dirname(path), f".{name}{CORRUPT_SUFFIX}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        except OSError:
            log.exception("cannot set aside unreadable message file %s", path)
            return
        log.error("message file %s did not parse for %.0f s: set aside as %s", name, age, aside)

    def _remove_stale_temp(self, path: str) -> None:
        with suppress(OSError):
            if time.time() - os.stat(path).st_mtime > STALE_TEMP_AFTER:
                os.remove(path)

    @property
    def fsync(self) -> bool:
        return bool(self.transport_options.get("fsync", True))

    @property
    def corrupt_after(self) -> float:
        return float(self.transport_options.get("corrupt_after", CORRUPT_AFTER))


class Transport(kombu_filesystem.Transport):
    """kombu's filesystem transport with atomic sends and readers that never choke."""

    Channel = Channel
    global_state = virtual.BrokerState()


TRANSPORT = f"{__name__}:Transport"  # for Celery's `broker_transport`, beside a `filesystem://` URL


def _parse(raw: bytes) -> Any:
    """The message in `raw`, or None while it is not whole JSON (empty, or cut short)."""
    try:
        payload = loads(bytes_to_str(raw))
    except ValueError:  # JSONDecodeError, or UTF-8 cut in the middle of a character
        return None
    return payload if isinstance(payload, dict) else None


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

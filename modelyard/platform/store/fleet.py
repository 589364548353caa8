"""The edge fleet's repository: bundles, device groups, enrollment tokens, devices, rollouts and the
devices each rollout touched (the tables are in store/db.py).

fleet/ keeps the rules (who may enroll, what a device is told to run, how a rollout moves:
fleet/phases.py) and calls this for every read and write. A state-changing step of the fleet
is one transaction under the fleet lock: `FleetStore.locked()` hands out a FleetTx for it, and
everything the step reads and writes goes through that FleetTx, so the step reads and decides
on what no other step can change under it, and commits all of its writes and events or none.
Conditional writes say whether they matched a row (an UPDATE that matches none is no error in
SQLAlchemy: the count is checked here and returned).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.platform.settings import Settings
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import (
    Bundle,
    Device,
    DeviceGroup,
    EnrollmentToken,
    Event,
    Rollout,
    RolloutDevice,
    ensure_schema,
    session_factory,
)
from modelyard.platform.store.requests import rowcount

FLEET_LOCK = 7244197  # the PostgreSQL advisory lock key of fleet writes (migrations use 7244196)


def fleet_lock(session: Session) -> None:
    """Serialize the fleet's state-changing transactions, taken first thing in the transaction.

    Rollout steps read, decide and write (a phase change, assignments, a revert); two ticks (two
    workers), or a tick and an operator's abort, must not decide on the same read. On PostgreSQL an
    advisory transaction lock does it; SQLite ignores FOR UPDATE and pysqlite starts no transaction
    on a SELECT, so a first statement that writes takes the database's write lock before anything
    is read (WAL readers are never blocked by it).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FLEET_LOCK})
    else:
        session.execute(text("UPDATE device_groups SET name = name WHERE 1 = 0"))


def _set(row: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(row, key, value)


class FleetTx:
    """The reads and writes of one fleet transaction (see FleetStore.locked)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # -- groups -------------------------------------------------------------------------------------
    def group(self, name: str) -> DeviceGroup | None:
        return self._session.get(DeviceGroup, name)

    def ensure_group(self, name: str, settings: Settings) -> DeviceGroup:
        """The group, created with the settings' defaults if it is new."""
        group = self._session.get(DeviceGroup, name)
        if group is None:
            group = DeviceGroup(
                name=name,
                target=settings.edge_bundle_target,
                canary_percent=settings.rollout_canary_percent,
                observe_seconds=settings.rollout_observe_seconds,
                max_failure_share=settings.rollout_max_failure_share,
            )
            self._session.add(group)
            self._session.flush()
        return group

    def set_group(self, group: DeviceGroup, **values: Any) -> None:
        _set(group, values)

    # -- bundles ------------------------------------------------------------------------------------
    def bundle(self, model: str, version: str, target: str) -> Bundle | None:
        return self._session.get(Bundle, (model, version, target))

    # -- rollouts and their devices -------------------------------------------------------------------
    def rollout(self, rollout_id: int) -> Rollout | None:
        return self._session.get(Rollout, rollout_id)

    def rollouts_in(self, group: str, states: Sequence[str]) -> list[Rollout]:
        query = select(Rollout).where(Rollout.group == group, Rollout.state.in_(states))
        return list(self._session.scalars(query))

    def add_rollout(self, **values: Any) -> Rollout:
        """A new rollout, its id assigned."""
        rollout = Rollout(**values)
        self._session.add(rollout)
        self._session.flush()
        return rollout

    def set_rollout(self, rollout: Rollout, **values: Any) -> None:
        _set(rollout, values)

    def rows(self, rollout_id: int) -> list[RolloutDevice]:
        """The devices the rollout touched."""
        return list(self._session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)))

    def row(self, rollout_id: int, device_id: str) -> RolloutDevice | None:
        return self._session.get(RolloutDevice, (rollout_id, device_id))

    def add_row(self, **values: Any) -> None:
        self._session.add(RolloutDevice(**values))

    def set_row(self, row: RolloutDevice, **values: Any) -> None:
        _set(row, values)

    def settle_row(self, rollout_id: int, device_id: str, allowed: Sequence[str], **values: Any) -> bool:
        """Move the device's row of the rollout, only from one of the `allowed` states: whether it moved."""
        moved = self._session.execute(
            update(RolloutDevice)
            .where(
                RolloutDevice.rollout_id == rollout_id,
                RolloutDevice.device_id == device_id,
                RolloutDevice.state.in_(allowed),
            )
            .values(**values)
        )
        return rowcount(moved) == 1

    def settle_rows_of(self, device_id: str, states: Sequence[str], **values: Any) -> int:
        """Move every row of the device (in any rollout) that is in one of `states`: how many moved."""
        moved = self._session.execute(
            update(RolloutDevice)
            .where(RolloutDevice.device_id == device_id, RolloutDevice.state.in_(states))
            .values(**values)
        )
        return rowcount(moved)

    # -- devices ------------------------------------------------------------------------------------
    def device(self, device_id: str, for_update: bool = False) -> Device | None:
        return self._session.get(Device, device_id, with_for_update=for_update or None)

    def candidates(self, group: str, rollout_id: int) -> list[Device]:
        """The group's active devices the rollout has not touched, by id."""
        touched = select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == rollout_id)
        query = select(Device).where(Device.group == group, Device.state == "active", Device.id.not_in(touched))
        return list(self._session.scalars(query.order_by(Device.id)))

    def add_device(self, **values: Any) -> None:
        self._session.add(Device(**values))

    def set_device(self, device: Device, **values: Any) -> None:
        _set(device, values)

    # -- enrollment tokens ----------------------------------------------------------------------------
    def token(self, token_sha256: str) -> EnrollmentToken | None:
        """The token with this hash, its row locked (PostgreSQL) until the transaction ends."""
        query = select(EnrollmentToken).where(EnrollmentToken.token_sha256 == token_sha256).with_for_update()
        return self._session.scalar(query)

    def add_token(self, **values: Any) -> None:
        self._session.add(EnrollmentToken(**values))

    def spend_token(self, token_id: int) -> bool:
        """One use of the token, if it has one left: whether it was spent (two enrollments racing for the
        last use cannot both win)."""
        spent = self._session.execute(
            update(EnrollmentToken)
            .where(EnrollmentToken.id == token_id, EnrollmentToken.uses_left > 0)
            .values(uses_left=EnrollmentToken.uses_left - 1)
        )
        return rowcount(spent) == 1

    # -- the audit log --------------------------------------------------------------------------------
    def record(self, *events: EventRecord) -> None:
        """Events in this transaction (fleet events move no alias: they have no projections to keep)."""
        self._session.add_all(Event(**vars(e)) for e in events)


class FleetStore:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)

    @contextmanager
    def locked(self, duplicate: Exception | None = None) -> Iterator[FleetTx]:
        """One transaction under the fleet lock; committed when the block ends, rolled back if it raises.

        `duplicate`: raised instead when the commit breaks a unique key (another process wrote the
        same new row at the same moment).
        """
        try:
            with self._sessions.begin() as session:
                fleet_lock(session)
                yield FleetTx(session)
        except IntegrityError:
            if duplicate is None:
                raise
            raise duplicate from None

    @contextmanager
    def writing(self) -> Iterator[FleetTx]:
        """One transaction without the fleet lock: for what no step decides on (a device's own report)."""
        with self._sessions.begin() as session:
            yield FleetTx(session)

    # -- reading ------------------------------------------------------------------------------------
    def rollout_ids(self, states: Sequence[str]) -> list[int]:
        with self._sessions() as session:
            return list(session.scalars(select(Rollout.id).where(Rollout.state.in_(states)).order_by(Rollout.id)))

    def rollout(self, rollout_id: int) -> tuple[Rollout | None, list[RolloutDevice]]:
        """The rollout and the devices it touched (None, [] when there is no such rollout)."""
        with self._sessions() as session:
            rollout = session.get(Rollout, rollout_id)
            if rollout is None:
                return None, []
            return rollout, FleetTx(session).rows(rollout_id)

    def recent(
        self, model: str | None, group: str | None, limit: int
    ) -> tuple[list[Rollout], dict[int, dict[str, int]]]:
        """Rollouts, newest first, and per rollout how many of its devices are in each state."""
        query = select(Rollout).order_by(Rollout.id.desc()).limit(limit)
        if model is not None:
            query = query.where(Rollout.model == model)
        if group is not None:
            query = query.where(Rollout.group == group)
        with self._sessions() as session:
            found = list(session.scalars(query))
            counts: dict[int, dict[str, int]] = {}
            for row in session.scalars(
                select(RolloutDevice).where(RolloutDevice.rollout_id.in_([r.id for r in found]))
            ):
                per = counts.setdefault(row.rollout_id, {})
                per[row.state] = per.get(row.state, 0) + 1
        return found, counts

    def latest(self, group: str) -> Rollout | None:
        with self._sessions() as session:
            return session.scalar(select(Rollout).where(Rollout.group == group).order_by(Rollout.id.desc()).limit(1))

    def groups(self) -> list[DeviceGroup]:
        with self._sessions() as session:
            return list(session.scalars(select(DeviceGroup).order_by(DeviceGroup.name)))

    def devices(self, group: str | None = None) -> list[Device]:
        query = select(Device).order_by(Device.group, Device.id)
        if group is not None:
            query = query.where(Device.group == group)
        with self._sessions() as session:
            return list(session.scalars(query))

    def device(self, device_id: str) -> Device | None:
        with self._sessions() as session:
            return session.get(Device, device_id)

    def assignments(
        self, device_id: str
    ) -> tuple[Device | None, DeviceGroup | None, list[tuple[Rollout, RolloutDevice]]]:
        """The device, its group, and every rollout that touched it with the device's row in it (one read: what a
        device credential reaches is decided on one consistent view)."""
        with self._sessions() as session:
            device = session.get(Device, device_id)
            if device is None:
                return None, None, []
            group = session.get(DeviceGroup, device.group)
            query = (
                select(Rollout, RolloutDevice)
                .join(RolloutDevice, RolloutDevice.rollout_id == Rollout.id)
                .where(RolloutDevice.device_id == device_id)
            )
            return device, group, [(rollout, row) for rollout, row in session.execute(query).tuples()]

    def device_with_credential(self, credential_sha256: str) -> str | None:
        """The active device whose credential has this hash."""
        query = select(Device.id).where(Device.credential_sha256 == credential_sha256, Device.state == "active")
        with self._sessions() as session:
            return session.scalar(query)

    # -- bundles ------------------------------------------------------------------------------------
    def bundle(self, model: str, version: str, target: str) -> Bundle | None:
        with self._sessions() as session:
            return session.get(Bundle, (model, version, target))

    def any_bundle(self, model: str, version: str) -> Bundle | None:
        with self._sessions() as session:
            return session.scalar(select(Bundle).where(Bundle.model == model, Bundle.version == version).limit(1))

    def save_bundle(self, bundle: Bundle) -> None:
        with self._sessions.begin() as session:
            session.merge(bundle)

    def bundle_users(self, sha256: str, states: Sequence[str]) -> tuple[int | None, list[str]]:
        """A rollout in one of `states` that sends this bundle, and the devices told to run it."""
        with self._sessions() as session:
            running = session.scalar(
                select(Rollout.id).where(Rollout.sha256 == sha256, Rollout.state.in_(states)).limit(1)
            )
            devices = [d.id for d in session.scalars(select(Device)) if (d.desired or {}).get("sha256") == sha256]
        return running, devices

    def failed_build_at(self, model: str, version: str, target: str) -> dt.datetime | None:
        """When a build of the version's bundle for the target last failed (its `bundle_failed` event)."""
        query = (
            select(Event)
            .where(Event.model == model, Event.kind == "bundle_failed", Event.to_version == version)
            .order_by(Event.id.desc())
            .limit(20)
        )
        with self._sessions() as session:
            for event in session.scalars(query):
                if (event.evidence or {}).get("target", target) == target:
                    return event.created_at
        return None

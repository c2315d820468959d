"""The state room: what this process reads and writes outside itself, and its view of it.

The registry it follows (and which one, ``RegistrySource``), the state database (its engine,
checked against the schema and claimed for that registry; the leader lease), the host's
artifact cache, and the catalog: the database's snapshot in memory, which requests resolve
against. Building it is the first thing that touches the outside: a database of another
registry or an older schema stops the start here. Disposed of after every other room but the
records and observability rooms.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.registry_source import RegistrySource
from gateway.routing.catalog import Catalog, LookAgain
from gateway.settings import GatewaySettings
from registry_sync.artifacts import ArtifactStore
from registry_sync.database import check_schema, is_sqlite, make_engine
from registry_sync.lease import Lease, lease_timing, new_holder_id
from registry_sync.registry import RegistryReader
from registry_sync.repository import StateStore


@dataclass(eq=False)
class StateRoom:
    reader: RegistryReader
    source: RegistrySource
    engine: Engine
    store: StateStore
    artifacts: ArtifactStore
    lease: Lease
    renew_seconds: float  # how often the leader renews its lease
    catalog: Catalog

    @classmethod
    def build(cls, settings: GatewaySettings, *, reader: RegistryReader | None, look_again: LookAgain) -> StateRoom:
        """``reader``: the registry chosen by the caller (None: MLflow's from the environment);
        ``look_again``: what the catalog does on a miss (the sync room's, built later)."""
        chosen = reader is not None
        reader = reader or RegistryReader()
        source = RegistrySource.of(reader, chosen=chosen)
        engine = make_engine(settings.database_url, sqlite_synchronous=settings.database_sqlite_synchronous)
        check_schema(engine, auto_upgrade=is_sqlite(settings.database_url))
        store = StateStore(engine)
        store.claim(reader.registry_uri)
        artifacts = ArtifactStore(
            reader,
            settings.artifact_cache_dir,
            max_bytes=settings.artifact_cache_max_bytes,
            allowed_uris=settings.allowed_artifact_uris,
        )
        ttl, renew = lease_timing(
            poll_interval_seconds=settings.poll_interval_seconds, lease_seconds=settings.lease_seconds
        )
        return cls(
            reader=reader,
            source=source,
            engine=engine,
            store=store,
            artifacts=artifacts,
            lease=Lease(engine, ttl_seconds=ttl, holder=new_holder_id()),
            renew_seconds=renew,
            catalog=Catalog(store, warm_aliases=settings.warm_aliases, look_again=look_again),
        )

    def close(self) -> None:
        self.store.engine.dispose()

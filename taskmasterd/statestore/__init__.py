"""The daemon's state on disk, so that it survives the daemon (issue 13).

- `records`: what is recorded (ProcessRecord, Snapshot), the file format
  (encode/decode, refusal reasons), the launch fingerprint, /proc parsing.
- `store`: the file itself (atomic save, load with refusal, the lock).
- `writer`: the asyncio adapter, one write per loop turn at most.

API: `StateStore(statedir).load() -> Snapshot | Refused`, `.save(snapshot)`,
`.remove()`, `.lock()`; `StoreWriter(store, snapshot_fn).changed()`.
"""

from taskmasterd.statestore.records import ProcessRecord as ProcessRecord
from taskmasterd.statestore.records import Refused as Refused
from taskmasterd.statestore.records import Snapshot as Snapshot
from taskmasterd.statestore.store import StateStore as StateStore
from taskmasterd.statestore.store import StoreBusy as StoreBusy
from taskmasterd.statestore.writer import StoreWriter as StoreWriter

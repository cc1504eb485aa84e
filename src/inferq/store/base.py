"""The store port, as adapters and older code name it.

The ports themselves belong to core (:mod:`inferq.core.ports`): ``JobStore`` is
:class:`~inferq.core.ports.Store`, every narrow port at once. Adapters:
:mod:`inferq.store.memory` (the fake, for unit tests and queue benchmarks),
:mod:`inferq.store.sqlite` (the default) and :mod:`inferq.store.postgres` (a fleet),
the last two being one :class:`~inferq.store.sql_store.SqlStore` over a database's
executor. All of them pass the same contract suite
(``tests/contract/test_store_contract.py``).
"""

from __future__ import annotations

from inferq.core.ports import BatchStore, FileStore, JobQueue, KeyStore, Store

JobStore = Store

__all__ = ["BatchStore", "FileStore", "JobQueue", "JobStore", "KeyStore", "Store"]

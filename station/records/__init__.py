"""The station's records: what it knows of every batch, hub and job, and what it reports.

Where things live:

- ``store``: the :class:`~station.records.store.Store`: schema, transactions, queries;
- ``recorder``: the controller's single writer, persisting slot records before publishing;
- ``manifest``: consignment manifests (CSV) read in;
- ``reports``: reconciliation, JUnit and the batch summary, computed from the store alone.
"""

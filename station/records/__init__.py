"""The station's records: what it knows of every batch, hub and job, and what it reports.

Where things live (docs/records.md says what each guarantees):

- ``schema``: the tables, the schema version, the limit of every value;
- ``store``: the :class:`~station.records.store.Store`: transactions and every query;
- ``leases``: which process owns a station's jobs, and when that owner is gone;
- ``pass_rule``: the one rule for what counts as a pass;
- ``dsp``: the DSP firmware-version update, per hub and exactly once;
- ``audit`` and ``keys``: the hash chain of record snapshots, and the signed heads;
- ``reports`` and ``report_check``: reconciliation, JUnit and the summary; checking a report
  file against the records;
- ``recorder``: the controller's single writer, durable before published;
- ``manifest``: consignment manifests (CSV) read in;
- ``errors``: what the records refuse, as one-line errors.
"""

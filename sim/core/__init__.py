"""The simulator core every simulated hub model builds on, naming no protocol.

:mod:`sim.core.timed` (device outputs and the timer bookkeeping of a pure model),
:mod:`sim.core.flash` (NOR flash), :mod:`sim.core.pacing` (the wire clock that makes a
model as slow as its line), :mod:`sim.core.faults` (the one ``--faults`` grammar for
serial and USB hubs) and :mod:`sim.core.spec` (what one hub is, and the hub models found
through the protocol plug-ins). A protocol's own model (``sim.an3155``, ``sim.gecko``,
``sim.usb_dfu``) builds on these; nothing here imports one.
"""

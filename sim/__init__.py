"""Simulated Communications Hubs: pure device models and the adapters that expose them.

:mod:`sim.an3155` is the pure model of the ``demo-an3155`` hub, :mod:`sim.pty` serves it on
a pseudo-terminal (one process per hub), :mod:`sim.faults` parses fault plans and
:mod:`sim.cli` is ``station sim``. This package never imports ``station``.
"""

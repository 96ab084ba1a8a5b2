"""Simulated Communications Hubs: pure device models and the adapters that expose them.

:mod:`sim.core` is what every hub model builds on (timed outputs, flash, pacing, the one
fault grammar, the hub spec and the protocols' simulated models, found through the
protocol plug-ins); :mod:`sim.an3155` and :mod:`sim.gecko` are pure models of serial hubs;
:mod:`sim.pty` serves one on a pseudo-terminal (one process per hub) and
:mod:`sim.urlhandler` inside the caller's process as a ``sim://`` pyserial port;
:mod:`sim.usb_dfu` and its backends are the USB hubs; :mod:`sim.cli` is ``station sim``.
This package never imports ``station``.
"""

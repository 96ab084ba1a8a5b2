"""Simulated Communications Hubs: pure device models and the adapters that expose them.

:mod:`sim.an3155` and :mod:`sim.gecko` are pure models of serial hubs; :mod:`sim.pty`
serves one on a pseudo-terminal (one process per hub) and :mod:`sim.urlhandler` inside the
caller's process as a ``sim://`` pyserial port; :mod:`sim.usb_dfu` and its backends are the
USB hubs; :mod:`sim.faults` parses fault plans and :mod:`sim.cli` is ``station sim``. This
package never imports ``station``.
"""

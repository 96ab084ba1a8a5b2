"""pyserial URL handlers for simulated hubs (``sim://``); see :mod:`.protocol_sim`."""

from __future__ import annotations

import serial

PACKAGE = __name__


def register() -> None:
    """Let ``serial.serial_for_url`` open ``sim://`` URLs (idempotent).

    pyserial imports ``<package>.protocol_<scheme>`` for a URL's scheme from each package
    in ``serial.protocol_handler_packages``; only the package's name is added here, so the
    handler module is imported the first time a ``sim://`` URL is opened.
    """
    if PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(PACKAGE)

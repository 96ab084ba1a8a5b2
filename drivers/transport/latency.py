"""USB-serial adapter latency: ask for low-latency mode and find out what the port got.

A USB-serial adapter holds received bytes until its buffer fills or its latency timer runs
out (16 ms by default on FTDI parts), so every turnaround of a lock-step protocol (an
AN3155 ACK, an XMODEM block's ACK) waits for it. On Linux the serial driver may honour the
``ASYNC_LOW_LATENCY`` flag (pyserial's ``set_low_latency_mode``, ``TIOCSSERIAL``; ftdi_sio
then sets its timer to 1 ms), and FTDI ports expose the timer itself in sysfs
(``/sys/bus/usb-serial/devices/ttyUSB0/latency_timer``, in ms, writable by root or a
udev rule). Both are tried; what the port ended up with is reported, never assumed:
a driver that refuses the flag and a timer file that cannot be written leave the port as
it was, and the station records and warns about that. A port class may report its own
timer (``latency_timer_ms``: the in-process simulated hubs do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A timer above this is worth a warning: 16 ms costs a lock-step 256 KiB job seconds.
HIGH_LATENCY_MS = 4.0
SYSFS = Path("/sys")


@dataclass(frozen=True, slots=True)
class AdapterLatency:
    """What a port's adapter ended up with after the station asked for low latency.

    Attributes:
        ms: the latency timer in ms when it could be read (sysfs or the port itself);
            None when the port does not say (a CP210x or CH340: about 1 ms by design).
        low_latency: whether the driver took the low-latency flag (None: not asked, as
            on a network port, whose adapter sits at the exporter).
        detail: what was done and found, in words, for the job's record.
    """

    ms: float | None
    low_latency: bool | None
    detail: str

    @property
    def high(self) -> bool:
        """Whether the port runs at a latency worth a warning."""
        return self.ms is not None and self.ms > HIGH_LATENCY_MS


def _timer_file(url: str, sysfs: Path) -> Path | None:
    """The FTDI latency_timer file of the tty ``url`` names (following /dev/serial links)."""
    if not url.startswith("/"):
        return None
    name = os.path.basename(os.path.realpath(url))
    path = sysfs / "bus" / "usb-serial" / "devices" / name / "latency_timer"
    return path if path.is_file() else None


def _read_ms(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def set_low_latency(ser: Any, url: str, *, sysfs: Path = SYSFS) -> AdapterLatency:
    """Ask the open port ``ser`` for low latency; return what it ended up with.

    Never raises: every refusal is part of the answer.
    """
    said: list[str] = []
    low: bool | None = None
    if hasattr(ser, "set_low_latency_mode"):
        try:
            ser.set_low_latency_mode(True)
            low = True
            said.append("low-latency mode set")
        except (OSError, ValueError, AttributeError) as exc:  # serial errors are OSErrors
            low = False
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            said.append(f"the driver refused low-latency mode ({reason})")
    else:
        said.append("this kind of port has no low-latency mode")
    ms: float | None = None
    timer = _timer_file(url, sysfs)
    if timer is not None:
        before = _read_ms(timer)
        if before is not None and before > 1:
            try:
                timer.write_text("1")
            except OSError as exc:
                said.append(f"{timer} could not be written ({exc.strerror or exc})")
        ms = _read_ms(timer)
        if before is not None and ms is not None and ms != before:
            said.append(f"FTDI latency_timer {before:g} -> {ms:g} ms")
        elif ms is not None:
            said.append(f"FTDI latency_timer {ms:g} ms")
    else:
        reported = getattr(ser, "latency_timer_ms", None)
        if isinstance(reported, int | float):
            ms = float(reported)
            said.append(f"the port reports {ms:g} ms")
    return AdapterLatency(ms, low, "; ".join(said))

"""Typed errors shared by every layer.

Every error a user can see derives from :class:`StationError` and says *what* went wrong,
*where* (port, phase, address) and, when we know, *what to do*. Library exceptions
(``serial.SerialException``, ``OSError``) are translated at the transport boundary with
``raise ... from exc`` so nothing above the transport sees them.
"""

from __future__ import annotations


class StationError(Exception):
    """Root of every error the station reports.

    Attributes:
        message: what went wrong, without location.
        port: the port or device the error concerns, when known.
        phase: the job phase (``"identify"``, ``"write"``...), when known.
        address: the memory address concerned, when known.
        hint: what the user can do about it.
    """

    default_hint = ""

    def __init__(
        self,
        message: str,
        *,
        port: str | None = None,
        phase: str | None = None,
        address: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.port = port
        self.phase = phase
        self.address = address
        self.hint = self.default_hint if hint is None else hint

    def located(self, *, port: str | None = None, phase: str | None = None) -> StationError:
        """Fill in the port and phase if a lower layer did not know them; returns self."""
        self.port = self.port or port
        self.phase = self.phase or phase
        return self

    def __str__(self) -> str:
        where = []
        if self.port:
            where.append(self.port)
        if self.phase:
            where.append(self.phase)
        text = f"{': '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


# --- transport ---------------------------------------------------------------------------


class TransportError(StationError):
    """The byte pipe failed (open, read, write)."""


class PortNotFound(TransportError):
    default_hint = "check the cable and the port name; 'station ports' lists what is attached"


class PortBusy(TransportError):
    default_hint = "another program has the port open; close it (e.g. a terminal or ModemManager)"


class PortVanished(TransportError):
    default_hint = "the hub or adapter was unplugged or reset; reseat it and run the job again"


class RemotePortLost(PortVanished):
    """The network connection to a port's exporter (ser2net) dropped mid-job.

    Attributes:
        host: the exporter's host, to which the fault belongs (not the hub, not the slot).
    """

    def __init__(self, message: str, *, host: str, port: str | None = None) -> None:
        super().__init__(
            message,
            port=port,
            hint=f"check ser2net and the network at {host}, then run the job again; the hub "
            "may hold a partly written image",
        )
        self.host = host


class NoModemLines(TransportError):
    default_hint = (
        "this port has no DTR/RTS lines (a pseudo-terminal or network port); "
        "use a profile whose bootloader entry is a console command or a strapped boot pin"
    )


class LinkTimeout(TransportError):
    """The peer did not send the expected bytes in time."""


class AmbiguousDevice(TransportError):
    """More than one attached device matches the selection: refusing to guess.

    Attributes:
        candidates: one line per matching device (location, ids, serial number).
    """

    default_hint = (
        "select the hub by its USB port path (--port usb:<bus>-<port.path>), which no two "
        "devices share"
    )

    def __init__(self, message: str, candidates: list[str], *, port: str | None = None) -> None:
        super().__init__(f"{message}: " + "; ".join(candidates), port=port)
        self.candidates = candidates


class NoUsbBackend(TransportError):
    """pyusb found no USB library (libusb) to talk through."""

    default_hint = (
        "install libusb-1.0 (Debian: apt install libusb-1.0-0), or set STATION_USB_BACKEND "
        "to a simulated bus (see docs/sim-dfu.md)"
    )


# --- protocol ----------------------------------------------------------------------------


class ProtocolError(StationError):
    """The hub answered, but not as the protocol says it must."""


class NoSync(ProtocolError):
    default_hint = (
        "is the hub powered and in its bootloader (boot pin strapped), on the right port "
        "and baud rate?"
    )


class NackError(ProtocolError):
    """The bootloader refused a command (NACK) after every retry."""

    default_hint = (
        "the hub kept refusing it: reseat the hub and cable and run the job again; if "
        "several hubs fail in this slot, suspect the slot's adapter"
    )


class DeviceTimeout(ProtocolError):
    """The hub stopped answering in the middle of a command."""

    default_hint = "the hub stalled or lost power; check the fixture and run the job again"


class Unsupported(ProtocolError):
    """The device does not offer a command the operation needs."""


class HubReset(ProtocolError):
    """The hub restarted in the middle of a command (power loss or brown-out)."""


class UsbStall(ProtocolError):
    """The USB device answered a control request with STALL (it refused the request)."""


class DfuStatusError(ProtocolError):
    """A DFU device reported a failure status (bStatus other than OK) or the dfuERROR state.

    Attributes:
        status: the bStatus code (``drivers.dfu_codes.DfuStatus`` value).
        state: the bState the device reported with it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        state: int,
        port: str | None = None,
        phase: str | None = None,
        address: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, port=port, phase=phase, address=address, hint=hint)
        self.status = status
        self.state = state


# --- outcome -----------------------------------------------------------------------------


class VerifyError(StationError):
    """What is in the hub's flash is not the image that was written."""

    default_hint = "the flash does not hold the image; re-run the job (it re-erases the pages)"


class BootError(StationError):
    """The application did not start, or reports a version other than the image's."""


class ImageError(StationError):
    """A firmware image is malformed, tampered with, or unfit for the target."""


class ConfigError(StationError):
    """A profile, rig file or command-line setting is invalid."""

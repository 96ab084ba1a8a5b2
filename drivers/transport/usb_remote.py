"""A pyusb backend that forwards every backend call to a USB bus served on a UNIX socket.

The station reaches the simulated USB bus of ``station sim --protocol dfu`` through this
client: the real ``usb.core`` code (``find``, ``Device``, ``ctrl_transfer``) runs in the
station's process and only the backend calls (enumerate, descriptors, open, claim, control
transfers, reset) cross the socket, to the process where the hubs live and their time is
modelled. Like pyserial's ``socket://`` handler, it is a transport, not a simulator: it
knows nothing about DFU.

Wire format (both directions): a 4-byte big-endian length, then a UTF-8 JSON object.
Requests are ``{"op": NAME, "args": [...]}``; replies ``{"ok": VALUE}`` or
``{"err": CODE, "msg": TEXT}`` where CODE is a libusb error code (``LIBUSB_ERROR_*``), which
this client raises as pyusb's libusb1 backend would (``USBError`` carrying
``backend_error_code`` and ``errno``; ``USBTimeoutError`` for a timeout). Bytes travel as
base64 strings.
"""

from __future__ import annotations

import abc
import array
import base64
import contextlib
import errno
import json
import socket
import struct
from typing import Any

import usb.backend
import usb.core

#: libusb error codes (libusb.h) and the errno pyusb's libusb1 backend pairs with each.
LIBUSB_ERROR_IO = -1
LIBUSB_ERROR_INVALID_PARAM = -2
LIBUSB_ERROR_ACCESS = -3
LIBUSB_ERROR_NO_DEVICE = -4
LIBUSB_ERROR_NOT_FOUND = -5
LIBUSB_ERROR_BUSY = -6
LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_PIPE = -9

_ERRORS: dict[int, tuple[str, int]] = {
    LIBUSB_ERROR_IO: ("Input/output error", errno.EIO),
    LIBUSB_ERROR_INVALID_PARAM: ("Invalid parameter", errno.EINVAL),
    LIBUSB_ERROR_ACCESS: ("Access denied (insufficient permissions)", errno.EACCES),
    LIBUSB_ERROR_NO_DEVICE: ("No such device (it may have been disconnected)", errno.ENODEV),
    LIBUSB_ERROR_NOT_FOUND: ("Entity not found", errno.ENOENT),
    LIBUSB_ERROR_BUSY: ("Resource busy", errno.EBUSY),
    LIBUSB_ERROR_TIMEOUT: ("Operation timed out", errno.ETIMEDOUT),
    LIBUSB_ERROR_PIPE: ("Pipe error", errno.EPIPE),
}

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 1 << 20


def usb_error(code: int, detail: str = "") -> usb.core.USBError:
    """The exception pyusb's libusb1 backend raises for libusb error ``code``."""
    text, number = _ERRORS.get(code, ("Unknown error", errno.EIO))
    if detail:
        text = f"{text}: {detail}"
    if code == LIBUSB_ERROR_TIMEOUT:
        return usb.core.USBTimeoutError(text, code, number)
    return usb.core.USBError(text, code, number)


def send_message(sock: socket.socket, obj: Any) -> None:
    """Send one length-prefixed JSON message."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(_HEADER.pack(len(body)) + body)


def recv_message(sock: socket.socket) -> Any:
    """Receive one message; raises EOFError when the peer closed the connection."""
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if length > _MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is larger than {_MAX_MESSAGE}")
    return json.loads(_recv_exact(sock, length))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def b64(data: bytes) -> str:
    """Bytes as they travel in a message."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes from a message."""
    return base64.b64decode(text)


class _Descriptor:
    """A descriptor as pyusb expects it: every field an attribute."""

    def __init__(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key == "port_numbers" and value is not None:
                value = tuple(value)
            setattr(self, key, value)


class _Ref:
    """An opaque device id or handle: the bus's token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"<usb {self.token}>"


class ForwardingBackend(usb.backend.IBackend, abc.ABC):  # type: ignore[misc]
    """A pyusb backend whose every call is one operation on a USB bus kept elsewhere.

    Implements what pyusb needs for control-transfer devices (enumeration, descriptors,
    open and close, configuration and interface calls, ``ctrl_transfer``, reset) as calls
    of :meth:`_call`, which a subclass carries to the bus: over a socket
    (:class:`RemoteUsbBackend`) or straight into a simulated bus in this process
    (``sim.usb_backend.SimUsbBackend``). ``_call`` raises errors as pyusb's libusb1
    backend does (:func:`usb_error`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[Any, ...], _Descriptor] = {}

    @abc.abstractmethod
    def _call(self, op: str, *args: Any, wait_s: float | None = None) -> Any:
        """Run ``op`` on the bus; ``wait_s`` is how long it may take (None: no limit)."""

    def _pack(self, data: bytes) -> Any:
        """OUT data as the bus takes them."""
        return data

    def _unpack(self, reply: Any) -> bytes:
        """IN data from the bus's reply."""
        return bytes(reply)

    def _descriptor(self, key: tuple[Any, ...], op: str, *args: Any) -> _Descriptor:
        # Descriptors of one enumeration of a device never change: ask once.
        if key not in self._cache:
            self._cache[key] = _Descriptor(self._call(op, *args))
        return self._cache[key]

    # -- IBackend ------------------------------------------------------------------------

    def enumerate_devices(self) -> list[_Ref]:
        return [_Ref(token) for token in self._call("enumerate_devices")]

    def get_parent(self, dev: _Ref) -> None:
        return None

    def get_device_descriptor(self, dev: _Ref) -> _Descriptor:
        return self._descriptor(("dev", dev.token), "get_device_descriptor", dev.token)

    def get_configuration_descriptor(self, dev: _Ref, config: int) -> _Descriptor:
        return self._descriptor(
            ("cfg", dev.token, config), "get_configuration_descriptor", dev.token, config
        )

    def get_interface_descriptor(self, dev: _Ref, intf: int, alt: int, config: int) -> _Descriptor:
        try:
            return self._descriptor(
                ("intf", dev.token, intf, alt, config),
                "get_interface_descriptor",
                dev.token,
                intf,
                alt,
                config,
            )
        except usb.core.USBError as exc:
            if exc.backend_error_code == LIBUSB_ERROR_NOT_FOUND:
                raise IndexError(f"no interface {intf} alternate {alt}") from exc
            raise

    def get_endpoint_descriptor(
        self, dev: _Ref, ep: int, intf: int, alt: int, config: int
    ) -> _Descriptor:
        raise IndexError(f"interface {intf} alternate {alt} has no endpoint {ep}")

    def open_device(self, dev: _Ref) -> _Ref:
        return _Ref(self._call("open_device", dev.token))

    def close_device(self, dev_handle: _Ref) -> None:
        with contextlib.suppress(usb.core.USBError):
            self._call("close_device", dev_handle.token)

    def set_configuration(self, dev_handle: _Ref, config_value: int) -> None:
        self._call("set_configuration", dev_handle.token, config_value)

    def get_configuration(self, dev_handle: _Ref) -> int:
        return int(self._call("get_configuration", dev_handle.token))

    def set_interface_altsetting(self, dev_handle: _Ref, intf: int, altsetting: int) -> None:
        self._call("set_interface_altsetting", dev_handle.token, intf, altsetting)

    def claim_interface(self, dev_handle: _Ref, intf: int) -> None:
        self._call("claim_interface", dev_handle.token, intf)

    def release_interface(self, dev_handle: _Ref, intf: int) -> None:
        self._call("release_interface", dev_handle.token, intf)

    def ctrl_transfer(
        self,
        dev_handle: _Ref,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        length = len(data) * data.itemsize
        device_to_host = bool(bmRequestType & 0x80)
        payload = self._pack(b"" if device_to_host else data.tobytes())
        wait_s = timeout / 1000.0 if timeout else None  # 0: no timeout, as in libusb
        reply = self._call(
            "ctrl_transfer",
            dev_handle.token,
            bmRequestType,
            bRequest,
            wValue,
            wIndex,
            payload,
            length,
            timeout,
            wait_s=wait_s,
        )
        if device_to_host:
            raw = self._unpack(reply)
            data[: len(raw)] = array.array("B", raw)
            return len(raw)
        return int(reply)

    def reset_device(self, dev_handle: _Ref) -> None:
        self._call("reset_device", dev_handle.token)

    def clear_halt(self, dev_handle: _Ref, ep: int) -> None:
        self._call("clear_halt", dev_handle.token, ep)

    def is_kernel_driver_active(self, dev_handle: _Ref, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Ref, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Ref, intf: int) -> None:
        return None


class RemoteUsbBackend(ForwardingBackend):
    """pyusb backend over a UNIX-domain socket (see the module docstring).

    Args:
        path: the server's socket.
        connect_timeout_s: how long to wait for the connection.

    Raises:
        OSError: the socket cannot be reached (the caller names the setting at fault).
    """

    def __init__(self, path: str, *, connect_timeout_s: float = 2.0) -> None:
        super().__init__()
        self.path = path
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout_s)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            self._sock = None
            raise
        self._sock.settimeout(None)

    def close(self) -> None:
        """Close the connection (the server forgets this client's handles)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _finalize_object(self) -> None:
        self.close()

    def _call(self, op: str, *args: Any, wait_s: float | None = None) -> Any:
        if self._sock is None:
            raise usb_error(LIBUSB_ERROR_NO_DEVICE, f"USB bus server at {self.path} is closed")
        # A reply never takes longer than the transfer's own timeout plus the server's
        # pacing; the margin covers a loaded machine without hanging forever.
        self._sock.settimeout(None if wait_s is None else wait_s + 10.0)
        try:
            send_message(self._sock, {"op": op, "args": list(args)})
            reply = recv_message(self._sock)
        except (OSError, EOFError, ValueError) as exc:
            self.close()
            raise usb_error(
                LIBUSB_ERROR_NO_DEVICE, f"USB bus server at {self.path} went away ({exc})"
            ) from exc
        if "err" in reply:
            raise usb_error(int(reply["err"]), str(reply.get("msg", "")))
        return reply["ok"]

    def _pack(self, data: bytes) -> Any:
        return b64(data)

    def _unpack(self, reply: Any) -> bytes:
        return unb64(reply)

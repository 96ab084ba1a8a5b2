"""Reading an input file the station did not write: a regular file, size-capped, no hang.

Every file an operator or a catalogue hands the station (firmware images, catalogue
release files, trust store keys, TOML settings) is hostile until checked. ``Path.read_bytes``
trusts the name: a link to ``/dev/zero`` reads until memory runs out, a FIFO blocks until
someone writes to it, a directory gives a traceback, a sparse terabyte file takes forever.
:func:`read_regular_file` checks what the name really is before reading a byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from drivers.errors import ImageError, StationError

#: Largest firmware file read. Hub flash is a few MiB at most; an Intel HEX file takes
#: 2.8 text bytes per payload byte, so 32 MiB holds any real image with room to spare.
IMAGE_FILE_LIMIT = 32 << 20
#: Largest trust store file read. A PEM public key is a few hundred bytes, a certificate
#: chain a few KiB.
KEY_FILE_LIMIT = 64 << 10
#: Largest settings file (catalogue index, rig, profile) read: thousands of entries fit.
CONFIG_FILE_LIMIT = 4 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory, not a file"),
    (stat.S_ISFIFO, "a FIFO (named pipe), not a regular file"),
    (stat.S_ISCHR, "a character device, not a regular file"),
    (stat.S_ISBLK, "a block device, not a regular file"),
    (stat.S_ISSOCK, "a socket, not a regular file"),
)
_READ_CHUNK = 1 << 20


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` is not a regular file (``"is a FIFO (named pipe), ..."``), or None.

    None too when it does not exist or cannot be looked at: reading it will say why. For
    callers that must tell a file of the wrong kind (a broken installation) from one that
    is missing or bad (see :func:`read_regular_file`'s ``error``).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else f"is {_kind(mode)}"


def read_regular_file(
    path: str | Path,
    *,
    limit: int,
    what: str,
    error: type[StationError] = ImageError,
    hint: str | None = None,
) -> bytes:
    """The bytes of ``path``, if it is a regular file of at most ``limit`` bytes.

    The file is looked at before it is opened (``stat``: a device is never opened, since
    opening some, such as a serial port or a tape, acts on the hardware), opened with
    ``O_NONBLOCK`` (a FIFO swapped in meanwhile cannot block the open) and checked again
    with ``fstat`` on the open descriptor, which is what is read. The size is checked
    before reading, and reading stops one byte past ``limit`` in case the file grows.

    Args:
        path: the file; symbolic links are followed (and named in the error).
        limit: the most bytes accepted.
        what: what the file is for the user, e.g. ``"image file"``, ``"trust store key"``.
        error: the error raised. The caller decides because the same fault means different
            things: a bad image file is bad input for one job (:class:`ImageError`), a bad
            key or settings file is a broken installation (:class:`ConfigError`).
        hint: what the user can do, appended to the error.

    Raises:
        StationError: (of type ``error``) missing or unreadable, not a regular file
            (directory, FIFO, device, socket), or larger than ``limit``; one line naming
            ``path``.
    """
    p = Path(path)

    def refuse(why: str) -> StationError:
        target = ""
        if p.is_symlink():
            target = f" (a link to {os.path.realpath(p)})"
        return error(f"{what} {p}{target} {why}", hint=hint)

    try:
        before = os.stat(p)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}", hint=hint) from exc
    if not stat.S_ISREG(before.st_mode):
        raise refuse(f"is {_kind(before.st_mode)}")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}", hint=hint) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"is {_kind(st.st_mode)}")
        if st.st_size > limit:
            raise refuse(f"is {st.st_size} bytes, more than the {limit} accepted")
        parts: list[bytes] = []
        total = 0
        want = st.st_size + 1  # one more than fstat says: a file that grew shows it
        while total <= limit:
            chunk = os.read(fd, want)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            want = min(limit + 1 - total, _READ_CHUNK)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}", hint=hint) from exc
    finally:
        os.close(fd)
    if total > limit:
        raise refuse(f"grew past the {limit} bytes accepted while it was read")
    return b"".join(parts)  # one part: the same object, no copy


def read_regular_text(
    path: str | Path,
    *,
    limit: int = CONFIG_FILE_LIMIT,
    what: str,
    error: type[StationError] = ImageError,
) -> str:
    """:func:`read_regular_file` for a UTF-8 text file (a rig, a profile, a manifest).

    Raises:
        StationError: (of type ``error``) as :func:`read_regular_file`, or text that is
            not UTF-8 (naming the line).
    """
    data = read_regular_file(path, limit=limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{what} {path}:{line}: not UTF-8 text") from exc

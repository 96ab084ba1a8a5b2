"""Reading an input file: only regular files, never more than a cap, never a hang."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from drivers.errors import ConfigError, ImageError
from firmware_images.files import read_regular_file


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 5000)
    assert read_regular_file(path, limit=5000, what="image file") == b"x" * 5000
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert read_regular_file(empty, limit=10, what="image file") == b""


def test_a_link_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.pem").write_bytes(b"key")
    (tmp_path / "link.pem").symlink_to(tmp_path / "real.pem")
    assert read_regular_file(tmp_path / "link.pem", limit=10, what="key") == b"key"


def test_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        f.truncate(1 << 33)  # a sparse 8 GiB: reading it would exhaust memory
    with pytest.raises(ImageError) as info:
        read_regular_file(path, limit=1 << 20, what="image file")
    assert str(path) in info.value.message
    assert f"{1 << 33} bytes" in info.value.message and f"{1 << 20}" in info.value.message


def test_a_link_to_dev_zero_is_refused_as_a_device(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    path.symlink_to("/dev/zero")
    with pytest.raises(ImageError, match=r"app\.hex \(a link to /dev/zero\) is a character device"):
        read_regular_file(path, limit=1 << 20, what="image file")


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    os.mkfifo(path)
    with pytest.raises(ImageError, match=r"app\.hex is a FIFO"):
        read_regular_file(path, limit=1 << 20, what="image file")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.pem").mkdir()
    with pytest.raises(ConfigError, match=r"x\.pem is a directory, not a file"):
        read_regular_file(tmp_path / "x.pem", limit=1024, what="trust store key", error=ConfigError)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pem"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ConfigError, match=r"s\.pem is a socket"):
            _read_key(path)


def test_missing_and_dangling_are_refused_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"cannot read image file .*nope\.hex: No such file"):
        read_regular_file(tmp_path / "nope.hex", limit=10, what="image file")
    (tmp_path / "dangling.pem").symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match=r"cannot read trust store key .*dangling\.pem"):
        _read_key(tmp_path / "dangling.pem")


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "k.pem"
    path.write_bytes(b"k")
    path.chmod(0)
    with pytest.raises(ConfigError, match=r"cannot read trust store key .*k\.pem"):
        _read_key(path)


def test_errors_are_one_line_with_the_hint(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f")
    with pytest.raises(ImageError) as info:
        read_regular_file(tmp_path / "f", limit=10, what="image file", hint="give the file")
    assert "\n" not in str(info.value) and str(info.value).endswith("(give the file)")


def _read_key(path: Path) -> bytes:
    return read_regular_file(path, limit=1024, what="trust store key", error=ConfigError)

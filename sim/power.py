"""Simulated slot power: a relay board whose channels feed simulated hubs.

A real bench switches each slot's supply with a relay board, a PDU or a USB hub port. The
simulated board is a folder with one small file per channel (``<board>/<channel>``: ``on N``
or ``off N``, N the times it has been switched off), so every party that needs it sees the
same state: the relay command the station runs (``python -m sim.power BOARD CHANNEL
on|off``, an external program as a real relay tool is), a simulated hub in the station's
own process (``sim://an3155?power=BOARD``), a hub on a pseudo-terminal, and the simulated
USB hub's switched ports. A channel with no file is on.

Fault: a channel whose contact is welded (``<board>/<channel>.stuck`` exists, made with
``--stuck``) takes every command and reports success, but its hub keeps its power; the
station must notice (the hub still answers after "off").

A hub reads its channel each time it is used: power that went off (the count moved on)
since it last looked means it lost its RAM and restarts from flash, its boot pin sampled as
power comes back (:meth:`sim.pins.HubPins.power`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STATES = ("on", "off")


@dataclass(frozen=True)
class Channel:
    """What a hub on a channel sees: power now, and how often it has gone off."""

    on: bool = True
    offs: int = 0


class PowerBoard:
    """A simulated relay board kept in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def _file(self, channel: int) -> Path:
        if channel < 1:
            raise ValueError(f"channel {channel}: channels are numbered from 1")
        return self.folder / str(channel)

    def read(self, channel: int) -> Channel:
        """The channel's state (a channel never switched is on)."""
        try:
            text = self._file(channel).read_text(encoding="ascii").split()
        except FileNotFoundError:
            return Channel()
        if len(text) != 2 or text[0] not in STATES or not text[1].isdigit():
            raise ValueError(f"{self._file(channel)}: not 'on N' or 'off N'")
        return Channel(text[0] == "on", int(text[1]))

    def stuck(self, channel: int) -> bool:
        """Whether the channel's contact is welded (commands do nothing)."""
        return self._file(channel).with_suffix(".stuck").exists()

    def set_stuck(self, channel: int, stuck: bool = True) -> None:
        """Weld (or free) the channel's contact."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self._file(channel).with_suffix(".stuck")
        if stuck:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def switch(self, channel: int, on: bool) -> Channel:
        """Switch the channel; a stuck one stays as it is. Returns what the hub sees."""
        now = self.read(channel)
        if self.stuck(channel) or now.on == on:
            return now
        new = Channel(on, now.offs + (0 if on else 1))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(channel)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{'on' if on else 'off'} {new.offs}\n", encoding="ascii")
        os.replace(tmp, path)  # a hub reading meanwhile sees the old or the new state
        return new


class PowerWatch:
    """A hub's view of its channel: has it lost power since it last looked?

    A hub is pumped far more often than a relay switches: the channel's file is read again
    only when its inode or modification time changed (one ``stat``); a whole cycle between
    two looks is still seen, by the off count.
    """

    def __init__(self, board: PowerBoard, channel: int) -> None:
        self.board = board
        self.channel = channel
        self._stamp = self._stat()
        self.seen = board.read(channel)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.board.folder / str(self.channel))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def look(self) -> tuple[bool, bool]:
        """(powered now, lost power since the last look)."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self.seen.on, False
        self._stamp = stamp
        now = self.board.read(self.channel)
        lost = now.offs != self.seen.offs or (self.seen.on and not now.on)
        self.seen = now
        return now.on, lost


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim.power BOARD CHANNEL on|off``: the simulated relay board's tool."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.power",
        description="Switch a channel of a simulated relay board (a folder) on or off, as "
        "a relay board's own tool would; simulated hubs with power=BOARD follow it.",
        epilog="exit status: 0 switched (a stuck channel also says 0, as a welded relay "
        "does), 2 bad arguments.",
    )
    parser.add_argument("board", help="the board's folder")
    parser.add_argument("channel", type=int, help="channel number (a slot number), from 1")
    parser.add_argument("state", choices=[*STATES, "status"], help="on, off or status")
    parser.add_argument(
        "--stuck", action="store_true", help="weld the channel's contact first (a fault)"
    )
    args = parser.parse_args(argv)
    board = PowerBoard(args.board)
    try:
        if args.stuck:
            board.set_stuck(args.channel)
        if args.state == "status":
            state = board.read(args.channel)
        else:
            state = board.switch(args.channel, args.state == "on")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"channel {args.channel} {'on' if state.on else 'off'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

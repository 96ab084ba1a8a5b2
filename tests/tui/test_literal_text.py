"""The operator's UI shows text from outside as it is: never as Textual/Rich markup.

Textual reads markup in a plain ``str`` given to a widget or a notification, so an operator
named ``[bold]boss`` would show as a bold "boss", and ``[/]`` could end the UI. Operator
names, station ids, profile names, file names, hub answers and error messages are all
shown literally, control characters as escapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input, Static

from sim.pty import SimHub
from station.batch import BatchRun
from station.demo import prepare_demo_catalog
from station.tui.app import StationApp
from station.tui.screens import ConfirmScreen, DetailScreen, OverrideScreen, StartScreen

from ..eventkit import event

pytestmark = pytest.mark.asyncio

SIZE = 8 * 1024


def on_screen(widget: Widget) -> str:
    """What a widget shows, as plain text (its lines as drawn)."""
    region = Region(0, 0, widget.size.width, widget.size.height)
    return "\n".join(strip.text for strip in widget.render_lines(region))


async def _until(pilot: Pilot[int], ok: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    for _ in range(int(limit_s / 0.1)):
        if ok():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"never happened: {what}")


def words(widget: Widget) -> str:
    """What a widget shows, its lines joined and spaces collapsed (dialogs wrap)."""
    return " ".join(on_screen(widget).split())


def _status(app: StationApp) -> str:
    return on_screen(app.status)


@pytest.mark.parametrize("operator", ["[bold]boss", "[/]"])
async def test_operator_and_external_text_are_shown_literally(
    operator: str, start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE)
    # A profile file whose model name is markup (and is not in the catalogue).
    builtin = Path(__file__).parents[2] / "station" / "profiles" / "demo-an3155.toml"
    odd = tmp_path / "odd.toml"
    odd.write_text(builtin.read_text().replace('name = "demo-an3155"', 'name = "[bold]model"'))
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f"station_id = {json.dumps('[red]bench[/]')}\n"
        f'[[slot]]\nnumber = 1\nport = "{hub.port}"\nprofile = "demo-an3155"\n'
        f'[[slot]]\nnumber = 2\nport = "/dev/no-hub-here"\nprofile = "{odd}"\n'
    )
    batch = BatchRun.open(
        str(rig),
        catalog_dir=str(tmp_path / "demo" / "catalog"),
        trust_dir=str(tmp_path / "demo" / "trust"),
        db_url=f"sqlite:///{tmp_path}/station.db",
    )
    app = StationApp(batch, operator="", reports_dir=tmp_path / "reports")
    async with app.run_test(size=(140, 40)) as pilot:
        start = app.screen
        assert isinstance(start, StartScreen)
        await _until(pilot, lambda: not app.probing, "the probe ended")
        assert "station [red]bench[/], 2 slots" in on_screen(start.query_one("#summary"))
        plan = on_screen(start.query_one("#plan", DataTable))
        assert "[bold]model is not catalogued" in plan and "[bold]model" in plan, plan

        # A manifest path that is markup: the error names it as typed.
        start.query_one("#plan", DataTable).focus()
        await pilot.press("m")
        app.screen.query_one("#answer", Input).value = "[/]none.csv"
        await pilot.press("enter")
        await pilot.pause()
        assert "[/]none.csv" in _status(app)

        # The operator's name, typed on the start screen.
        start.query_one("#operator", Input).value = operator
        start.query_one("#operator", Input).focus()
        await pilot.press("enter")
        assert f"Operator {operator}. s starts the batch" in on_screen(
            start.query_one("#start-status", Static)
        )

        # The override dialogs name the operator who will be audited.
        await pilot.press("o")
        assert isinstance(app.screen, OverrideScreen)
        assert f"audit log as {operator} and" in words(app.screen.query_one(".question"))
        app.screen.query_one("#allow_downgrade", Checkbox).value = True
        await pilot.click("#apply")
        assert isinstance(app.screen, ConfirmScreen)
        assert f"audit log as {operator}." in words(app.screen.query_one(".question"))
        await pilot.press("n")
        assert isinstance(app.screen, StartScreen)

        await pilot.press("s")
        await _until(pilot, lambda: app.view.slots[1].state == "passed", "slot 1 passed")
        assert app.operator == operator
        assert app.sub_title.endswith(f"operator {operator}")

        # A scanned label that is markup.
        app.grid.tiles[0].focus()
        await pilot.press("l")
        app.screen.query_one("#answer", Input).value = "[bold]label"
        await pilot.press("enter")
        assert "'[bold]label' is not an EUI-64" in _status(app)

        # What a hub said, as the controller publishes it (a simulated hub cannot be made
        # to say this): markup and a terminal escape.
        said = "hub said [/] [bold]NACK \x1b[2J"
        app.inbox.append(
            event(
                "job-finished",
                slot=2,
                state="failed",
                data={"message": said, "phase": "write", "hint": "ask [red]boss"},
            )
        )
        await _until(pilot, lambda: app.view.slots[2].state == "failed", "slot 2 failed")
        await pilot.pause()
        shown = "hub said [/] [bold]NACK \\x1b[2J"
        tile = on_screen(app.grid.tiles[1])
        assert "[/] [bold]NACK" in tile and "\x1b" not in tile
        app.grid.tiles[1].focus()
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        detail = on_screen(app.screen.query_one("#detail"))
        assert shown in detail and "ask [red]boss" in detail
        assert "\x1b" not in detail
        await pilot.press("escape")

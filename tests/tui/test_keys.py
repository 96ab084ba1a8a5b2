"""The keyboard as an operator uses it: text fields keep their keys, arrows move in the
grid's two dimensions, dialogs say how to leave them, and nothing needed is cut at 80x24."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import DataTable, Input

from station.batch import BatchRun
from station.demo import prepare_demo_catalog
from station.tui.app import StationApp
from station.tui.screens import PromptScreen, StartScreen

from .test_literal_text import on_screen

pytestmark = pytest.mark.asyncio


def _drawn(widget: Widget) -> str:
    """A widget as drawn, border and padding included."""
    region = Region(0, 0, widget.outer_size.width, widget.outer_size.height)
    return "\n".join(strip.text for strip in widget.render_lines(region))


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., StationApp]]:
    """An app over a rig of ``slots`` slots bound to ports that do not exist (no hubs)."""
    prepare_demo_catalog(tmp_path / "demo", size=8192)
    opened: list[BatchRun] = []

    def make(slots: int = 1, operator: str = "") -> StationApp:
        rig = tmp_path / f"rig-{len(opened)}.toml"
        rig.write_text(
            'station_id = "keys"\n'
            + "".join(
                f'[[slot]]\nnumber = {n}\nport = "/dev/no-hub-{n}"\nprofile = "demo-an3155"\n'
                for n in range(1, slots + 1)
            )
        )
        batch = BatchRun.open(
            str(rig),
            catalog_dir=str(tmp_path / "demo" / "catalog"),
            trust_dir=str(tmp_path / "demo" / "trust"),
            db_url=f"sqlite:///{tmp_path}/keys-{len(opened)}.db",
        )
        opened.append(batch)
        return StationApp(batch, operator=operator, probe_on_start=False)

    yield make
    for batch in opened:
        batch.close()


async def test_enter_on_an_empty_name_keeps_the_field_and_no_hotkey_fires(
    make_app: Callable[..., StationApp],
) -> None:
    """Issue 12 item 2: Enter on an empty name, then a name typed with hotkey letters in it,
    then Enter: the name is typed, no override dialog opens, nothing is ticked."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        start = app.screen
        assert isinstance(start, StartScreen)
        name = start.query_one("#operator", Input)
        assert app.focused is name
        await pilot.press("enter")
        assert "Enter the operator's name first" in on_screen(start.query_one("#start-status"))
        assert app.focused is name  # still typing the name
        await pilot.press(*"bob", "o", "m", "s", "p", "e", "question_mark", "q")
        assert name.value == "bobomspe?q"
        assert app.screen is start and app.is_running  # no dialog, no quit, no batch
        await pilot.press("enter")
        assert app.screen is start
        assert app.focused is start.query_one("#plan", DataTable)  # the name is taken
        assert not app.batch.policy.allow_unsigned
        assert app.batch.batch_id is None
    assert not [e for e in app.batch.store.audit_log() if e.action == "override"]


async def test_a_prompt_keeps_every_printable_key(make_app: Callable[..., StationApp]) -> None:
    """Typing a label or a path never runs the keys it contains."""
    app = make_app(operator="erin")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("m")
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        await pilot.press(*"qmo?sx")
        assert prompt.query_one("#answer", Input).value == "qmo?sx"
        assert app.screen is prompt and app.focused is prompt.query_one("#answer", Input)
        await pilot.press("escape")
        assert isinstance(app.screen, StartScreen)

"""The screens as an operator uses them: text fields keep their keys, arrows move in the
grid's two dimensions, dialogs say how to leave them, nothing needed is cut at 80x24, and
versions read one way (issue 12)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input

from station.batch import OVERRIDES, BatchRun, PlanRow
from station.demo import prepare_demo_catalog
from station.tui.app import StationApp
from station.tui.screens import KEYS, HelpScreen, OverrideScreen, PromptScreen, StartScreen

from .test_literal_text import on_screen, words

pytestmark = pytest.mark.asyncio

#: A probed plan: a hub to upgrade, one of another model, one off the pathway.
PLAN = [
    PlanRow(
        1,
        "/dev/a",
        "demo-an3155",
        "/dev/a",
        115200,
        eui64="00-DB-12-82-76-E8-33-39",
        version_before="0x01010000",
        probed=True,
        target="0x01050000",
        plan="upgrade to 0x01050000",
        image_bytes=8192,
        estimate_s=6.0,
    ),
    PlanRow(
        2,
        "/dev/b",
        "demo-an3155",
        "/dev/b",
        115200,
        probed=True,
        target="refused",
        problem="product ID 0x415 is not demo-an3155's 0x462 (another hub model)",
    ),
    PlanRow(
        3,
        "/dev/c",
        "demo-an3155",
        "/dev/c",
        115200,
        eui64="00-DB-12-E7-37-1B-8B-94",
        version_before="0x01000000",
        probed=True,
        target="refused",
        plan="off-pathway: no approved upgrade path from 0x01000000 to 0x01050000 "
        "(it accepts 0x01010000, 0x01020000)",
    ),
]


def drawn_line(app: StationApp, widget: Widget) -> str:
    """The screen's line where ``widget`` starts, as drawn (children included)."""
    return app.screen._compositor.render_strips()[widget.region.y].text


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


async def test_start_screen_at_80x24_shows_every_column_and_the_whole_footer(
    make_app: Callable[..., StationApp],
) -> None:
    """Issue 12 item 25: at 80x24 the plan's model is shown, and the footer is not cut."""
    app = make_app(slots=3, operator="erin")
    app.plan_rows = PLAN
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#plan", DataTable)
        shown = on_screen(table)
        for text in ("model", "demo-an3155", "00-DB-12-82-76-E8-33-39", "1.1.0.0", "1.5.0.0"):
            assert text in shown, shown
        assert max(len(line.rstrip()) for line in shown.splitlines()) <= table.size.width
        footer = drawn_line(app, app.screen.query_one("Footer"))
        assert footer.rstrip().endswith("q Quit"), footer
        # What does not fit a column is said in full for the row under the cursor.
        table.move_cursor(row=2)
        await pilot.pause()
        why = words(app.screen.query_one("#plan-why"))
        assert "off-pathway: no approved upgrade path from 1.0.0.0 to 1.5.0.0" in why, why


async def test_the_start_screen_offers_only_its_own_keys(
    make_app: Callable[..., StationApp],
) -> None:
    """The grid's keys (stop, retry, abort, label, export) do nothing before the batch."""
    app = make_app(slots=2, operator="erin")
    async with app.run_test(size=(160, 48)) as pilot:
        footer = drawn_line(app, app.screen.query_one("Footer"))
        for word in ("Stop", "Retry", "Abort", "Label", "Export"):
            assert word not in footer, footer
        await pilot.press("x")
        assert "nothing to report" not in on_screen(app.status)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_the_start_screen_reads_versions_dotted(
    make_app: Callable[..., StationApp], size: tuple[int, int]
) -> None:
    """Issue 12 item 21: the catalogue's newest release, running and target versions and the
    plan's reasons read 1.5.0.0, never 0x01050000."""
    app = make_app(slots=3, operator="erin")
    app.plan_rows = PLAN
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        summary = words(app.screen.query_one("#summary"))
        assert "newest 1.5.0.0" in summary and "0x0" not in summary, summary
        table = app.screen.query_one("#plan", DataTable)
        for row in range(len(PLAN)):
            table.move_cursor(row=row)
            await pilot.pause()
            shown = on_screen(table) + words(app.screen.query_one("#plan-why"))
            assert "0x0" not in shown, shown
        assert "1.1.0.0" in on_screen(table) and "1.5.0.0" in on_screen(table)


async def _to_the_grid(app: StationApp, pilot: Pilot[int]) -> None:
    """Past the start screen: the batch begins (the rig's ports have no hubs)."""
    await pilot.press("s")
    for _ in range(100):
        if not isinstance(app.screen, StartScreen):
            break
        await pilot.pause(0.05)
    assert not isinstance(app.screen, StartScreen)
    await pilot.pause()


@pytest.mark.parametrize(
    ("slots", "size"),
    [(10, (80, 24)), (10, (160, 48)), (16, (80, 24)), (16, (160, 48)), (64, (80, 24))],
)
async def test_arrows_move_in_the_grids_two_dimensions(
    make_app: Callable[..., StationApp], slots: int, size: tuple[int, int]
) -> None:
    """Issue 12 item 25: Down goes to the tile drawn below, Right to the one drawn beside it,
    and the grid's edges hold: Right at the end of a row does not go on to the next row
    (reading order), Down on the last row stays put."""
    app = make_app(slots=slots, operator="erin")
    async with app.run_test(size=size) as pilot:
        await _to_the_grid(app, pilot)
        tiles, cols = app.grid.tiles, app.grid.columns
        tiles[0].focus()
        await pilot.pause()
        first = tiles[0].region
        await pilot.press("down")
        below = app.grid.selected()
        assert below is tiles[cols]
        assert below.region.x == first.x and below.region.y > first.y
        await pilot.press("up")
        assert app.grid.selected() is tiles[0]
        await pilot.press(*["right"] * cols)  # one press more than the row has room for
        end = app.grid.selected()
        assert end is tiles[cols - 1] and end.region.y == first.y
        if cols > 1:
            await pilot.press("left")
            beside = app.grid.selected()
            assert beside is tiles[cols - 2] and beside.region.x < end.region.x
        tiles[-1].focus()
        await pilot.press("down", "right")
        assert app.grid.selected() is tiles[-1]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_help_says_how_to_close_it(
    make_app: Callable[..., StationApp], size: tuple[int, int]
) -> None:
    """Issue 12 item 25: the help's first lines say which keys close it, and they do."""
    app = make_app(slots=4, operator="erin")
    async with app.run_test(size=size) as pilot:
        await _to_the_grid(app, pilot)
        grid = app.screen
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        dialog = app.screen.query_one(".dialog")
        lines = app.screen._compositor.render_strips()
        top = [lines[y].text for y in range(dialog.region.y, dialog.region.y + 2)]
        assert any("Esc, q or ? closes this help" in line for line in top), top
        # Every key is drawn whole, on a line of its own, without scrolling.
        drawn = "\n".join(strip.text for strip in lines)
        for key, what in KEYS:
            assert f"{key}  {what}" in drawn, drawn
        for key in ("escape", "question_mark", "q"):
            if app.screen is grid:
                await pilot.press("question_mark")
            await pilot.press(key)
            assert app.screen is grid and app.is_running


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_override_boxes_say_their_state_without_colour(
    make_app: Callable[..., StationApp], size: tuple[int, int]
) -> None:
    """Issue 12 item 23: a ticked override reads ✓ and "on", an unticked one a blank box and
    "off": the same in monochrome. What each allows is not cut at 80x24 (item 25)."""
    app = make_app(operator="erin")
    async with app.run_test(size=size) as pilot:
        await pilot.press("o")
        dialog = app.screen
        assert isinstance(dialog, OverrideScreen)
        box = dialog.query_one("#allow_unsigned", Checkbox)
        assert "▐ ▌ off  allow-unsigned" in _drawn(box), _drawn(box)
        box.focus()
        await pilot.press("space")
        assert box.value
        assert "▐✓▌ on   allow-unsigned" in _drawn(box), _drawn(box)
        other = _drawn(dialog.query_one("#allow_downgrade", Checkbox))
        assert "▐ ▌ off  allow-downgrade" in other, other
        # What each one allows is said whole (wrapped, not cut at 80 columns).
        said = [" ".join(_drawn(w).split()) for w in dialog.query(".override-what")]
        assert said == list(OVERRIDES.values()), said
        assert all(
            w.region in dialog.query_one(".dialog").region for w in dialog.query(".override-what")
        )

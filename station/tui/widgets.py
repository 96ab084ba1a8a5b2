"""The slot grid, its tiles and the batch header."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.content import Content
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Checkbox

from station.tui.model import BatchView, SlotView, grid_shape, tile_text


class SlotTile(Widget, can_focus=True):
    """One slot: number, hub, versions, phase, progress and result (see ``tile_text``)."""

    DEFAULT_CSS = """
    SlotTile { height: 1; padding: 0; }
    SlotTile:focus { background: $boost; text-style: bold; }
    """

    def __init__(self, view: SlotView) -> None:
        super().__init__(id=f"slot-{view.number}")
        self.view = view

    def render(self) -> Text:
        w, h = self.size.width, max(self.size.height, 1)
        text = tile_text(self.view, w - 1, h)
        # The selected tile is marked by a pointer too, not only by its background.
        mark = Text("▸" if self.has_focus else " ", style="bold")
        lines = text.split("\n")
        return Text("\n").join([mark + lines[0], *(Text(" ") + line for line in lines[1:])])

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


class SlotGrid(Container, can_focus=False):
    """Every slot's tile, laid out to fit the terminal (denser tiles for more slots)."""

    DEFAULT_CSS = """
    SlotGrid { layout: grid; grid-size: 4; grid-gutter: 0 0; height: 1fr;
               overflow-y: auto; scrollbar-size-vertical: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1)", "←", show=False),
        Binding("right", "move(1)", "→", show=False),
        Binding("up", "move_row(-1)", "↑", show=False),
        Binding("down", "move_row(1)", "↓", show=False),
    ]

    def __init__(self, views: list[SlotView]) -> None:
        super().__init__(id="grid")
        self.tiles = [SlotTile(v) for v in views]
        self.columns = 4

    def compose(self) -> ComposeResult:
        yield from self.tiles

    def on_resize(self, event: Resize) -> None:
        self.fit(event.size.width, event.size.height)

    def fit(self, width: int, height: int) -> None:
        """Choose columns and tile height for this size."""
        cols, tile_h = grid_shape(len(self.tiles), width, height)
        self.columns = cols
        self.styles.grid_size_columns = cols
        self.styles.grid_rows = str(tile_h)
        for tile in self.tiles:
            tile.styles.height = tile_h

    def selected(self) -> SlotTile | None:
        """The focused tile."""
        return next((t for t in self.tiles if t.has_focus), None)

    def _go(self, column_step: int, row_step: int) -> None:
        """Move the focus in the grid as drawn: a row is ``columns`` tiles, and an edge holds
        (Right at a row's end does not go on to the next row, Down on the last row stays)."""
        current = self.selected()
        if current is None:
            self.tiles[0].focus()
            return
        index = self.tiles.index(current)
        column = index % self.columns + column_step
        target = index + column_step + row_step * self.columns
        if 0 <= column < self.columns and 0 <= target < len(self.tiles):
            self.tiles[target].focus()

    def action_move(self, delta: int) -> None:
        self._go(delta, 0)

    def action_move_row(self, delta: int) -> None:
        self._go(0, delta)

    def refresh_slots(self, numbers: set[int]) -> None:
        """Redraw only these slots' tiles."""
        for tile in self.tiles:
            if tile.view.number in numbers:
                tile.refresh()


class BatchHeader(Widget):
    """Passed, failed, refused, remaining, not seen or missing, elapsed and hubs/hour, on
    one line."""

    DEFAULT_CSS = "BatchHeader { height: 1; background: $panel; }"

    def __init__(self, batch: BatchView, clock: Callable[[], float]) -> None:
        super().__init__(id="header")
        self.model = batch
        self.clock = clock

    def render(self) -> Text:
        return self.model.header(self.clock(), self.size.width)


class ConsignmentLine(Widget):
    """The listed hubs not seen yet (or, once the batch is closed, missing), by EUI-64: the
    operator looks for them on the bench; above them, on a shared store, each loaded
    consignment's progress across stations. Shown only when there is something to say."""

    DEFAULT_CSS = "ConsignmentLine { height: auto; }"

    def __init__(self, batch: BatchView) -> None:
        super().__init__(id="consignment")
        self.model = batch

    def render(self) -> Text:
        return self.model.consignment(self.size.width)

    def update(self) -> None:
        """Show or hide it with the manifest, and redraw."""
        self.display = bool(self.model.listed or self.model.fleet)
        self.refresh(layout=True)  # its height follows its lines


class StateBox(Checkbox):
    """A checkbox whose state reads without colour: ``▐✓▌ on`` or ``▐ ▌ off`` before its text.
    Textual's own draws ``▐X▌`` either way and tells the states apart by colour only."""

    def __init__(self, text: str, value: bool, *, id: str, compact: bool = False) -> None:
        self._text = text
        super().__init__(self._words(value), value, id=id, compact=compact)
        self.BUTTON_INNER = "✓" if value else " "

    def _words(self, value: bool) -> Content:
        # Content, not str: a str label would be read as markup.
        return Content(f"{'on ' if value else 'off'}  {self._text}")

    def watch_value(self) -> None:
        # Also run by Checkbox.__init__, before it has a label to change.
        self.BUTTON_INNER = "✓" if self.value else " "
        if hasattr(self, "_label"):
            self.label = self._words(self.value)
        super().watch_value()

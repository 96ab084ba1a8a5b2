"""The bench operator's terminal UI (Textual): ``station tui``.

A thin front end over :class:`station.batch.BatchRun`: the controller runs in a Textual
thread worker, its events land in a queue that the UI drains a few times a second into a
plain model (:mod:`station.tui.model`), and only the tiles that changed are redrawn.
"""

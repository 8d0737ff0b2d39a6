"""Table cells that sort by their number, for the plugin's sortable tables."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem

#: the item data role holding a cell's number (what it sorts by)
SORT_ROLE = Qt.UserRole + 1


class SortableItem(QTableWidgetItem):
    """A cell that sorts by its number when it has one."""

    def __lt__(self, other):
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if a is not None and b is not None:
            return a < b
        return super().__lt__(other)


def number_item(value, text: str | None = None) -> SortableItem:
    """A cell showing ``text`` (``value`` with 2 decimals by default) that sorts by ``value``;
    an empty cell, sorted first, for NaN."""
    value = float(value)
    missing = not np.isfinite(value)
    item = SortableItem("" if missing else (text if text is not None else f"{value:.2f}"))
    item.setData(SORT_ROLE, -np.inf if missing else value)
    return item

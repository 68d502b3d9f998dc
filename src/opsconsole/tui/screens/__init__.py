"""One screen per pane, in tab order."""

from opsconsole.tui.screens.activity import ActivityScreen
from opsconsole.tui.screens.backlog import BacklogScreen
from opsconsole.tui.screens.catalog import CatalogScreen
from opsconsole.tui.screens.customers import CustomersScreen
from opsconsole.tui.screens.monitor import MonitorScreen
from opsconsole.tui.screens.quality import QualityScreen
from opsconsole.tui.screens.timeline import TimelineScreen

PANES = (
    MonitorScreen,
    BacklogScreen,
    QualityScreen,
    CustomersScreen,
    CatalogScreen,
    ActivityScreen,
    TimelineScreen,
)

__all__ = [
    "PANES",
    "ActivityScreen",
    "BacklogScreen",
    "CatalogScreen",
    "CustomersScreen",
    "MonitorScreen",
    "QualityScreen",
    "TimelineScreen",
]

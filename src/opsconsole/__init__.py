"""opsconsole: a terminal operations console for a PostgreSQL data platform."""

__version__ = "0.1.0"

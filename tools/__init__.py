"""Developer tooling that does not ship in the runtime package: screenshots, sample data for tests."""

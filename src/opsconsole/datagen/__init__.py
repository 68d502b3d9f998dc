"""Demo and test data: deterministic seeding, live traffic simulation, synthetic values."""

"""The connection precedence: --dsn > OPSCONSOLE_DSN > DATABASE_URL > --profile > libpq env > embedded."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsconsole.config import resolve_target
from opsconsole.errors import ConfigProblem


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.prod]\ndsn = "host=prod.example dbname=platform"\n')
    return path


def env_with(profile_file: Path, **extra: str) -> dict[str, str]:
    return {"OPSCONSOLE_CONFIG": str(profile_file), **extra}


FULL = {
    "OPSCONSOLE_DSN": "dbname=from_ops_env",
    "DATABASE_URL": "postgresql:///from_database_url",
    "PGHOST": "/tmp",
}


def test_each_rule_in_order(profile_file: Path) -> None:
    env = env_with(profile_file, **FULL)
    assert resolve_target("dbname=cli", "prod", env) == resolve_target("dbname=cli", None, env)
    assert resolve_target("dbname=cli", "prod", env).source == "--dsn"

    target = resolve_target(None, "prod", env)
    assert (target.dsn, target.source) == ("dbname=from_ops_env", "OPSCONSOLE_DSN")

    env.pop("OPSCONSOLE_DSN")
    target = resolve_target(None, "prod", env)
    assert (target.dsn, target.source) == ("postgresql:///from_database_url", "DATABASE_URL")

    env.pop("DATABASE_URL")
    target = resolve_target(None, "prod", env)
    assert (target.dsn, target.source) == ("host=prod.example dbname=platform", "profile prod")

    target = resolve_target(None, None, env)
    assert (target.dsn, target.source) == ("", "libpq environment")

    env.pop("PGHOST")
    target = resolve_target(None, None, env)
    assert target.embedded and target.source == "embedded"


def test_unknown_profile_names_the_known_ones(profile_file: Path) -> None:
    with pytest.raises(ConfigProblem, match="No profile 'staging'.*prod"):
        resolve_target(None, "staging", env_with(profile_file))


def test_malformed_config_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[profiles.prod\ndsn = ")
    with pytest.raises(ConfigProblem, match="not valid TOML"):
        resolve_target(None, "prod", {"OPSCONSOLE_CONFIG": str(path)})


def test_profile_without_dsn(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[profiles.prod]\nhost = 'x'\n")
    with pytest.raises(ConfigProblem, match="has no dsn"):
        resolve_target(None, "prod", {"OPSCONSOLE_CONFIG": str(path)})

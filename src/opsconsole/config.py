"""Where to connect: one documented precedence, resolved in one place.

Order (first that applies wins):
  1. --dsn
  2. OPSCONSOLE_DSN
  3. DATABASE_URL
  4. --profile NAME, read from ~/.config/opsconsole/config.toml ([profiles.NAME] dsn = "...")
  5. the libpq environment (PGHOST, PGDATABASE, PGSERVICE, ... when any is set)
  6. the embedded server (started on demand)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from opsconsole.errors import ConfigProblem

LIBPQ_ENV = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
    "PGSERVICEFILE",
)


@dataclass(frozen=True)
class Target:
    """A resolved connection target. dsn None means the embedded server."""

    dsn: str | None
    source: str

    @property
    def embedded(self) -> bool:
        return self.dsn is None


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    override = env.get("OPSCONSOLE_CONFIG")
    if override:
        return Path(override)
    return platformdirs.user_config_path("opsconsole") / "config.toml"


def load_profiles(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigProblem(f"The config file {path} is not valid TOML ({exc}); fix it.") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigProblem(f"In {path}, [profiles] must be a table of [profiles.NAME] entries.")
    return profiles


def resolve_target(
    dsn: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """Apply the documented precedence and say which rule chose the target."""
    env = os.environ if env is None else env
    if dsn:
        return Target(dsn, "--dsn")
    for var in ("OPSCONSOLE_DSN", "DATABASE_URL"):
        if env.get(var):
            return Target(env[var], var)
    if profile:
        path = config_path(env)
        profiles = load_profiles(path)
        entry = profiles.get(profile)
        if entry is None:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigProblem(f"No profile '{profile}' in {path} (profiles there: {known}).")
        if not isinstance(entry, dict) or not entry.get("dsn"):
            raise ConfigProblem(f"Profile '{profile}' in {path} has no dsn = \"...\" entry.")
        return Target(str(entry["dsn"]), f"profile {profile}")
    if any(env.get(var) for var in LIBPQ_ENV):
        return Target("", "libpq environment")
    return Target(None, "embedded")

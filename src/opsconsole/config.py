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

import json
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


def read_config(path: Path) -> dict:
    """The config file as a dict ({} when there is none)."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigProblem(f"The config file {path} is not valid TOML ({exc}); fix it.") from None


def load_profiles(path: Path) -> dict[str, dict]:
    data = read_config(path)
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


DESKTOP_NOTIFICATIONS = ("off", "osc9", "osc777")


@dataclass(frozen=True)
class ConsoleSettings:
    """[console] in the config file: how the console calls for attention when an incident starts.

    bell = true                       ring the terminal bell (default)
    desktop_notifications = "osc9"    also raise a desktop notification: "osc9" (iTerm2, Windows
                                      Terminal, kitty, WezTerm), "osc777" (foot, Ghostty, VTE/GNOME
                                      terminals, urxvt) or "off" (default)
    """

    bell: bool = True
    desktop_notifications: str = "off"


def console_settings(env: Mapping[str, str] | None = None) -> ConsoleSettings:
    path = config_path(env)
    section = read_config(path).get("console", {})
    if not isinstance(section, dict):
        raise ConfigProblem(f"In {path}, [console] must be a table.")
    bell = section.get("bell", True)
    style = section.get("desktop_notifications", "off")
    if not isinstance(bell, bool):
        raise ConfigProblem(f"In {path}, [console] bell must be true or false.")
    if style not in DESKTOP_NOTIFICATIONS:
        raise ConfigProblem(
            f"In {path}, [console] desktop_notifications must be one of {', '.join(DESKTOP_NOTIFICATIONS)}, "
            f"not {style!r}."
        )
    return ConsoleSettings(bell=bell, desktop_notifications=style)


def console_keys(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """[keys] in the config file: binding id = "key[,key...]" (the ids: docs/keys.md, or
    `opsconsole console --keys`). Only the shape is checked here; the console checks the ids."""
    path = config_path(env)
    section = read_config(path).get("keys", {})
    if not isinstance(section, dict):
        raise ConfigProblem(f'In {path}, [keys] must be a table of binding-id = "key" entries.')
    flat: dict[str, object] = {}

    def walk(prefix: str, table: dict) -> None:  # backlog.retry_failed = "R" is a nested table in TOML
        for name, value in table.items():
            if isinstance(value, dict):
                walk(f"{prefix}{name}.", value)
            else:
                flat[f"{prefix}{name}"] = value

    walk("", section)
    for binding_id, keys in flat.items():
        if not isinstance(keys, str) or not keys.strip():
            raise ConfigProblem(
                f"In {path}, [keys] {binding_id} must be a key name in quotes, "
                f'e.g. "{binding_id}" = "ctrl+r".'
            )
    return {k: str(v).strip() for k, v in flat.items()}


def state_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the console remembers choices between runs (the theme): not the config file, which is
    the operator's to edit."""
    env = os.environ if env is None else env
    override = env.get("OPSCONSOLE_STATE")
    if override:
        return Path(override)
    return platformdirs.user_state_path("opsconsole") / "console.json"


def remembered(key: str, env: Mapping[str, str] | None = None) -> str | None:
    """A choice the console remembered (None when there is none, or the file is unreadable)."""
    try:
        data = json.loads(state_path(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def remember(key: str, value: str, env: Mapping[str, str] | None = None) -> None:
    """Remember a choice for the next run; a file that cannot be written is not worth an error."""
    path = state_path(env)
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):  # unreadable: start it again
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError:
        pass

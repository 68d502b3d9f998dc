"""[keys] in the config file, the documented binding ids and the remembered theme (config.py,
tui/keys.py): bad input gets one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from opsconsole import config
from opsconsole.cli.main import main
from opsconsole.errors import ConfigProblem
from opsconsole.tui.keys import binding_ids, check_keymap

DOC = Path(__file__).resolve().parents[1] / "docs" / "keys.md"


def write(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return {"OPSCONSOLE_CONFIG": str(path)}


def test_every_binding_id_is_documented_and_nothing_else() -> None:
    documented = {
        line.split("`")[1] for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `")
    }
    assert documented == set(binding_ids())
    assert {"backlog.retry_failed", "backlog.park_dead_letters", "list.filter", "app.help"} <= documented


def test_keys_quoted_or_dotted_are_read(tmp_path: Path) -> None:
    env = write(tmp_path, '[keys]\n"backlog.retry_failed" = "R"\napp.help = " f1 "\n')
    keys = config.console_keys(env)
    assert keys == {"backlog.retry_failed": "R", "app.help": "f1"}
    check_keymap(keys, tmp_path / "config.toml")


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("[keys]\nbacklog.retry_failed = 3\n", "[keys] backlog.retry_failed must be a key name in quotes"),
        ("keys = 'r'\n", "[keys] must be a table"),
        ("[keys\n", "is not valid TOML"),
    ],
)
def test_bad_keys_get_one_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    env = write(tmp_path, text)
    with pytest.raises(ConfigProblem) as err:
        config.console_keys(env)
    assert sentence in err.value.message and "\n" not in err.value.message


def test_an_unknown_binding_id_stops_the_console_with_one_sentence(tmp_path: Path, monkeypatch) -> None:
    env = write(tmp_path, '[keys]\n"backlog.retry_everything" = "R"\n')
    monkeypatch.setenv("OPSCONSOLE_CONFIG", env["OPSCONSOLE_CONFIG"])
    result = CliRunner().invoke(main, ["--dsn", "postgresql:///nowhere", "console"])
    assert result.exit_code == 2
    assert "names no binding 'backlog.retry_everything'" in result.output
    assert "Traceback" not in result.output


def test_console_keys_lists_the_ids() -> None:
    result = CliRunner().invoke(main, ["console", "--keys"])
    assert result.exit_code == 0
    assert "backlog.what_if" in result.output and "monitor.fleet_pause" in result.output


def test_the_theme_is_remembered_and_a_broken_state_file_is_ignored(tmp_path: Path) -> None:
    env = {"OPSCONSOLE_STATE": str(tmp_path / "state" / "console.json")}
    assert config.remembered("theme", env) is None
    config.remember("theme", "nord", env)
    assert config.remembered("theme", env) == "nord"
    Path(env["OPSCONSOLE_STATE"]).write_text("{not json", encoding="utf-8")
    assert config.remembered("theme", env) is None
    config.remember("theme", "gruvbox", env)
    assert config.remembered("theme", env) == "gruvbox"

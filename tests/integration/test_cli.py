"""The real `nudgespot-segment check-config` console script, run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.prefix) / "bin" / "nudgespot-segment"
if not SCRIPT.exists():  # pragma: no cover - running outside the project venv
    SCRIPT = ROOT / ".venv" / "bin" / "nudgespot-segment"
SHIPPED = ROOT / "config.yaml"

GOOD = """\
sources:
  - name: {name}
    token: webhook-token-0001
    write_key: segment-write-key-0001
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without anything the config reads, plus `extra`."""
    dropped = (
        "NUDGESPOT_",
        "SEGMENT_",
        "DATABASE_URL",
        "ADMIN_TOKEN",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(extra)
    return env


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_console_script_is_installed():
    assert SCRIPT.exists()


def test_shipped_config_is_ok(tmp_path):
    result = run("check-config", "--config", str(SHIPPED), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout
    assert "default" in result.stdout


def test_shipped_config_is_the_default_in_its_directory():
    result = run("check-config", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout


def test_unknown_key_fails_naming_it(tmp_path):
    path = write(tmp_path / "bad.yaml", "servr:\n  port: 8080\n" + GOOD.format(name="default"))
    result = run("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "servr" in result.stderr
    assert "config ok" not in result.stdout


def test_unknown_source_key_fails_naming_its_path(tmp_path):
    text = GOOD.format(name="default") + "    tokn: oops\n"
    path = write(tmp_path / "bad.yaml", text)
    result = run("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "sources[0].tokn" in result.stderr


def test_missing_environment_variable_fails_naming_the_key_and_variable(tmp_path):
    text = (
        "sources:\n  - name: default\n    token: ${NUDGESPOT_WEBHOOK_TOKEN}\n"
        "    write_key: segment-write-key-0001\n"
    )
    path = write(tmp_path / "bad.yaml", text)
    result = run("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "sources[0].token" in result.stderr
    assert "NUDGESPOT_WEBHOOK_TOKEN" in result.stderr


def test_environment_variable_set_makes_that_config_ok(tmp_path):
    text = (
        "sources:\n  - name: default\n    token: ${NUDGESPOT_WEBHOOK_TOKEN}\n"
        "    write_key: segment-write-key-0001\n"
    )
    path = write(tmp_path / "env.yaml", text)
    env = clean_env(NUDGESPOT_WEBHOOK_TOKEN="token-from-environment")
    result = run("check-config", "--config", str(path), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr


def test_wrong_type_fails_naming_the_key(tmp_path):
    path = write(tmp_path / "bad.yaml", "server:\n  port: abc\n" + GOOD.format(name="default"))
    result = run("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "server.port" in result.stderr


def test_missing_config_file_fails(tmp_path):
    result = run("check-config", "--config", str(tmp_path / "absent.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "absent.yaml" in result.stderr


def test_config_env_var_is_used_without_the_flag(tmp_path):
    path = write(tmp_path / "elsewhere.yaml", GOOD.format(name="from-env-var"))
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = clean_env(NUDGESPOT_SEGMENT_CONFIG=str(path))
    result = run("check-config", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    assert "from-env-var" in result.stdout


def test_config_env_var_pointing_at_a_bad_file_fails(tmp_path):
    path = write(tmp_path / "bad.yaml", "servr: {}\n" + GOOD.format(name="default"))
    env = clean_env(NUDGESPOT_SEGMENT_CONFIG=str(path))
    result = run("check-config", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "servr" in result.stderr


def test_config_flag_wins_over_the_env_var(tmp_path):
    bad = write(tmp_path / "bad.yaml", "servr: {}\n")
    good = write(tmp_path / "good.yaml", GOOD.format(name="from-flag"))
    env = clean_env(NUDGESPOT_SEGMENT_CONFIG=str(bad))
    result = run("check-config", "--config", str(good), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "from-flag" in result.stdout


@pytest.mark.parametrize("secret", ["webhook-token-0001", "segment-write-key-0001"])
def test_check_config_does_not_print_secrets(tmp_path, secret):
    path = write(tmp_path / "good.yaml", GOOD.format(name="default"))
    result = run("check-config", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr

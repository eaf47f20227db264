import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluegreen", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_help_lists_commands_and_hides_secrets() -> None:
    env = {**os.environ, "BLUEGREEN_BLUE_DSN": "postgresql://u:leaky@h/db"}
    done = run_cli("--help", env=env)
    assert done.returncode == 0, done.stderr
    assert "stack" in done.stdout
    assert "leaky" not in done.stdout + done.stderr


def test_bad_setting_exits_non_zero_with_a_clear_message() -> None:
    env = {**os.environ, "BLUEGREEN_KAFKA__PARTITIONS": "-1"}
    done = run_cli("stack", "status", env=env)
    assert done.returncode == 1
    assert "BLUEGREEN_KAFKA__PARTITIONS" in done.stderr
    assert "Traceback" not in done.stderr

"""The `certbot-dane` command as a process: exit codes and output when its reader goes away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "certbot-dane.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[dns]\nserver = "127.0.0.1"\n'
                    f'key_name = "k"\nkey_secret = "{SECRET}"\n')
    path.chmod(0o600)
    return path


def run_with_closed_stdout(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run certbot-dane whose stdout reader has already gone (what `| head -1` does once it has its line)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([str(BIN / "certbot-dane"), *args], stdout=write_end, stderr=subprocess.PIPE,
                              timeout=60, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args, code", [(["check"], 1), (["status"], 1), (["--help"], 0), (["deploy", "--help"], 0),
                                        (["--version"], 0)])
def test_a_reader_that_went_away_ends_the_command_quietly(tmp_path, args, code):
    done = run_with_closed_stdout("-c", str(config_file(tmp_path)), *args)
    assert b"Traceback" not in done.stderr and b"Broken pipe" not in done.stderr, done.stderr
    assert done.returncode == code


def test_status_prints_json_or_prometheus_not_both(tmp_path):
    done = subprocess.run([str(BIN / "certbot-dane"), "-c", str(config_file(tmp_path)), "status", "--json",
                           "--prometheus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_status_that_cannot_run_still_prints_a_prometheus_exposition(tmp_path):
    done = subprocess.run([str(BIN / "certbot-dane"), "-c", str(tmp_path / "missing.toml"), "status", "--prometheus"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "cannot read configuration" in done.stderr
    assert [line for line in done.stdout.splitlines() if not line.startswith("#")][0] == "certbot_dane_up 0"

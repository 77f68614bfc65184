"""Commands in a subprocess, as a user runs them: chDB allows one engine path per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crowdwatch.settings import REPO_ROOT


def user_env(data_dir: Path | None = None, **variables: str) -> dict[str, str]:
    """This process's environment without its ``CROWDWATCH_`` settings, then the given ones.

    Args:
        data_dir: set as ``CROWDWATCH_DATA_DIR`` (the embedded engine and files live there).
        variables: more environment variables, ``CROWDWATCH_SITE_FILE="..."``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROWDWATCH_")}
    if data_dir is not None:
        env["CROWDWATCH_DATA_DIR"] = str(data_dir)
    return env | variables


def run_module(
    *argv: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m ARGV`` in the repository with ``env``, its output captured as text.

    ``check``: raise `subprocess.CalledProcessError` when it fails (else read ``returncode``).
    """
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        check=check,
        timeout=600,
    )


def crowdwatch(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The ``crowdwatch`` command line, as `run_module` runs it; ``env`` from `user_env`."""
    return run_module("app.cli", *args, env=env, check=check)

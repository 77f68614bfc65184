"""One process, one data directory (issue 15, case 9): compose and the buffer lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from crowdwatch.settings import REPO_ROOT
from crowdwatch.warehouse.buffer import BufferInUseError, DiskBuffer

HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from crowdwatch.warehouse.buffer import DiskBuffer

    held = DiskBuffer(Path(sys.argv[1]), 1 << 20)
    print("held", flush=True)
    sys.stdin.read()  # until the test lets go
    """
)


def test_case_9_a_second_process_is_refused_the_buffer_with_a_clear_error(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "buffer" / "crowdwatch" / "warehouse" / "worker-0"
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with pytest.raises(BufferInUseError) as refused:
            DiskBuffer(directory, 1 << 20)
        message = str(refused.value)
        assert "\n" not in message and "CROWDWATCH_DATA_DIR" in message
        assert str(directory) in message
    finally:
        other.communicate("", timeout=60)
    DiskBuffer(directory, 1 << 20).close()  # free again once the other process is gone


def test_case_9_compose_gives_every_pipeline_process_its_own_data_volume() -> None:
    compose = yaml.safe_load((REPO_ROOT / "infra" / "compose.yaml").read_text(encoding="utf-8"))
    owners: dict[str, list[str]] = {}
    pipelines = []
    for name, service in compose["services"].items():
        data_dir = service.get("environment", {}).get("CROWDWATCH_DATA_DIR")
        if data_dir is None:
            continue
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if target == data_dir:
                owners.setdefault(source, []).append(name)
        if service.get("command", [])[:2] == ["crowdwatch", "run"]:
            pipelines.append(name)
    assert len(pipelines) >= 2
    for name in pipelines:
        shared = [source for source, users in owners.items() if name in users]
        assert len(shared) == 1, name  # its data directory is a volume of its own ...
        assert owners[shared[0]] == [name], owners  # ... that no other service mounts

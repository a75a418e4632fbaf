"""HA stack files: `controlPlane.replicas` and `controlPlane.store` are validated with their
field paths, and the replicas' ports follow PORT_STRIDE."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamesh.errors import ConfigError
from novamesh.settings import Settings
from novamesh.stack import StackRunner, load_stack
from novamesh.stack_ha import PORT_STRIDE, replica_ports

WORKLOAD = """workloads:
  - service: reviews
    ports: [9080]
    command: ["python", "-m", "novamesh.testing.echo"]
"""


def _write(tmp_path: Path, cp: str) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(f"name: ha\ncontrolPlane:\n{cp}{WORKLOAD}")
    return path


def test_ha_control_plane_section_is_parsed(tmp_path: Path) -> None:
    stack = load_stack(_write(tmp_path, "  replicas: 3\n  store: etcd\n  httpPort: 21014\n  xdsPort: 21010\n"))
    assert (stack.control_plane.replicas, stack.control_plane.store) == (3, "etcd")
    runner = StackRunner(stack, Settings(data_dir=str(tmp_path / "d")))
    assert [replica_ports(runner, i) for i in range(3)] == [
        (21014 + PORT_STRIDE * i, 21010 + PORT_STRIDE * i, 21012 + PORT_STRIDE * i) for i in range(3)
    ]
    assert load_stack(_write(tmp_path, "  httpPort: 21014\n")).control_plane.store == "sqlite"


@pytest.mark.parametrize(
    ("cp", "path", "message"),
    [
        ("  replicas: 3\n", "controlPlane.replicas", "need a shared store"),
        ("  replicas: 0\n  store: etcd\n", "controlPlane.replicas", "integer from 1 to 5"),
        ("  replicas: three\n  store: etcd\n", "controlPlane.replicas", "integer from 1 to 5"),
        ("  replicas: 3\n  store: postgres\n", "controlPlane.store", "one of sqlite, etcd"),
    ],
)
def test_bad_ha_settings_are_refused_with_their_field(tmp_path: Path, cp: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_stack(_write(tmp_path, cp))
    assert any(v.path == path and message in v.message for v in exc.value.violations), exc.value
    assert any(v.line for v in exc.value.violations)

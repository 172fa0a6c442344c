import json
import os

import pytest

from inferstack.gateway.runtime import EnvoyStatus, EppStatus, GatewayStatus
from inferstack.process import pid_alive
from inferstack.stack.state import StateFile
from inferstack.stack.status import STATUS_SCHEMA_VERSION, ReplicaStatus, StackStatus, StateSchemaError


def status(pid: int = 0, **changes) -> StackStatus:
    replica = ReplicaStatus(name="r0", url="http://127.0.0.1:8101", port=8101, pid=11, state="ready", generation=1,
                            retiring=False, restarts=0, last_exit=None, started_at=1.0, ready_at=2.0, cores=[0],
                            log="r0.log")
    gateway = GatewayStatus(state="running", url="http://127.0.0.1:8080", base_url="http://127.0.0.1:8080/v1",
                            run_dir="run", envoy=EnvoyStatus(pid=12, state="running", restarts=0, log="e.log",
                                                             port=8080, admin_port=9901),
                            epp=EppStatus(pid=13, state="running", restarts=0, log="p.log", grpc_port=9002,
                                          metrics_port=9090), epp_failure_mode="closed")
    base = dict(state="ready", supervisor_pid=pid or os.getpid(), started_at=1.0, base_url="http://127.0.0.1:8080/v1",
                model="m", model_source="/models/m", speculative="ngram", dtype="float32", dtype_reason="default",
                config_path=None, endpoints_file="e.json", desired_replicas=1, ready_replicas=1, generation=1,
                replicas=[replica], gateway=gateway)
    return StackStatus(**{**base, **changes})


def test_write_read_remove_round_trips_the_typed_status(tmp_path):
    state = StateFile(tmp_path / "s" / "stack.json")
    assert state.read() is None
    state.write(status())
    got = state.read()
    assert got == status() and got.gateway.epp.metrics_port == 9090 and got.replicas[0].cores == [0]
    assert state.live() is not None
    state.remove()
    assert state.read() is None


def test_stale_state_is_not_live(tmp_path):
    state = StateFile(tmp_path / "stack.json")
    state.write(status(pid=2**22 + 12345))
    assert state.live() is None
    assert not pid_alive(None)


@pytest.mark.parametrize("version", [None, STATUS_SCHEMA_VERSION + 1, 0])
def test_a_file_of_another_schema_version_fails_loudly(tmp_path, version):
    path = tmp_path / "stack.json"
    doc = json.loads(status().model_dump_json())
    if version is None:
        del doc["schema_version"]  # what inferstack wrote before the status was typed
    else:
        doc["schema_version"] = version
    path.write_text(json.dumps(doc))
    with pytest.raises(StateSchemaError, match="written by another inferstack"):
        StateFile(path).read()


def test_a_file_missing_a_field_names_it(tmp_path):
    path = tmp_path / "stack.json"
    doc = json.loads(status().model_dump_json())
    del doc["replicas"][0]["cores"]
    path.write_text(json.dumps(doc))
    with pytest.raises(StateSchemaError, match="cores"):
        StateFile(path).read()


def test_a_stale_file_of_another_schema_is_no_running_stack(tmp_path):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"supervisor_pid": 2**22 + 12345, "state": "ready"}))  # an older inferstack's
    assert StateFile(path).live() is None
    path.write_text(json.dumps({"supervisor_pid": os.getpid(), "state": "ready"}))  # ... whose stack still runs
    with pytest.raises(StateSchemaError):
        StateFile(path).live()

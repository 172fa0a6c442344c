import os

from inferstack.stack.state import StateFile
from inferstack.process import pid_alive


def test_write_read_remove(tmp_path):
    state = StateFile(tmp_path / "s" / "stack.json")
    assert state.read() is None
    state.write({"supervisor_pid": os.getpid(), "state": "ready"})
    assert state.read()["state"] == "ready"
    assert state.live() is not None
    state.remove()
    assert state.read() is None


def test_stale_state_is_not_live(tmp_path):
    state = StateFile(tmp_path / "stack.json")
    state.write({"supervisor_pid": 2**22 + 12345})
    assert state.live() is None
    assert not pid_alive(None)

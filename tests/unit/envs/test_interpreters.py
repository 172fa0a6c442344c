import sys
from pathlib import Path

import pytest

from inferstack.envs import interpreters
from inferstack.errors import SetupError


def test_finds_the_running_interpreter_version():
    here = sys.version_info[:2]
    found = interpreters.find_python(here, here, purpose="test")
    assert found.version == here
    assert Path(found.path).exists()


def test_missing_version_is_a_clear_setup_error(monkeypatch):
    monkeypatch.setattr(interpreters, "_candidates", lambda minor: [])
    with pytest.raises(SetupError) as err:
        interpreters.find_python((3, 12), None, purpose="the benchmark environment")
    message = str(err.value)
    assert "the benchmark environment needs Python 3.12 or newer" in message
    assert "pyenv install 3.12" in message


def test_a_candidate_of_the_wrong_version_is_not_trusted(monkeypatch, tmp_path):
    # A shim named python3.12 that really runs this interpreter must not count as 3.12.
    fake = tmp_path / "python3.12"
    fake.symlink_to(sys.executable)
    monkeypatch.setattr(interpreters, "_candidates", lambda minor: [fake] if minor == 12 else [])
    if sys.version_info[:2] != (3, 12):
        with pytest.raises(SetupError):
            interpreters.find_python((3, 12), (3, 12), purpose="x")

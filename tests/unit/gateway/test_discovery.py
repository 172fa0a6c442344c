import asyncio
import json
from pathlib import Path

import pytest

from inferstack.errors import ConfigError
from inferstack.gateway.discovery import (FileWatchDiscovery, StaticListDiscovery, make_discovery,
                                          read_endpoints_file, write_endpoints_file)
from inferstack.gateway.kube_discovery import KubernetesPodDiscovery, PodSet, pod_endpoint
from inferstack.gateway.settings import FileDiscovery, KubernetesDiscovery, StaticDiscovery

EVENTS = [json.loads(line) for line in
          (Path(__file__).parent / "data" / "pod-watch-events.jsonl").read_text().splitlines() if line]


def test_static_validates_addresses():
    with pytest.raises(ConfigError, match=r"discovery.endpoints\[1\] has value 'nope'"):
        StaticListDiscovery(["127.0.0.1:8101", "nope"])
    with pytest.raises(ConfigError, match="port in 1..65535"):
        StaticListDiscovery(["127.0.0.1:99999"])


def test_host_names_become_ip_addresses():
    from inferstack.gateway.discovery import validate_address

    assert validate_address("localhost:8101") == "127.0.0.1:8101"
    assert validate_address("[::1]:8101") == "[::1]:8101"
    with pytest.raises(ConfigError, match="does not resolve"):
        validate_address("no-such-host.invalid:1")


def test_static_run_reports_once():
    got = []

    async def main():
        task = asyncio.create_task(StaticListDiscovery(["127.0.0.1:1"]).run(got.append))
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert got == [["127.0.0.1:1"]]


def test_file_discovery_follows_atomic_rewrites(tmp_path):
    path = tmp_path / "endpoints.json"
    d = FileWatchDiscovery(path)
    assert d.poll() == []  # missing file: no endpoints yet
    write_endpoints_file(path, ["127.0.0.1:1"])
    assert d.poll() == ["127.0.0.1:1"]
    assert d.poll() is None  # unchanged
    write_endpoints_file(path, ["127.0.0.1:1", "127.0.0.1:2"])
    assert d.poll() == ["127.0.0.1:1", "127.0.0.1:2"]
    path.write_text("{half")  # a broken write keeps the last good set
    assert d.poll() is None
    write_endpoints_file(path, [])
    assert d.poll() == []
    assert read_endpoints_file(path) == []
    assert not list(tmp_path.glob(".*tmp"))


def test_file_discovery_rejects_bad_shape(tmp_path):
    path = tmp_path / "e.json"
    path.write_text('{"endpoints": "x"}')
    with pytest.raises(ValueError, match="must hold"):
        read_endpoints_file(path)


def test_make_discovery_kinds(tmp_path):
    assert isinstance(make_discovery(StaticDiscovery(endpoints=["127.0.0.1:1"])), StaticListDiscovery)
    assert isinstance(make_discovery(FileDiscovery(path=tmp_path / "x")), FileWatchDiscovery)
    assert isinstance(make_discovery(KubernetesDiscovery(label_selector={"app": "v"})), KubernetesPodDiscovery)


def test_pod_endpoint_rules():
    ready = {"metadata": {"name": "p"}, "status": {"phase": "Running", "podIP": "10.0.0.1",
                                                   "conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_endpoint(ready, 8000) == "10.0.0.1:8000"
    not_ready = json.loads(json.dumps(ready))
    not_ready["status"]["conditions"][0]["status"] = "False"
    assert pod_endpoint(not_ready, 8000) is None
    deleting = json.loads(json.dumps(ready))
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_endpoint(deleting, 8000) is None
    assert pod_endpoint({"status": {"phase": "Pending"}}, 8000) is None


def test_pod_watch_on_recorded_events():
    pods = PodSet(target_port=8000)
    pods.reset([])
    seen = []
    for ev in EVENTS:
        if pods.apply(ev):
            seen.append(pods.endpoints())
    # vllm-0 becomes ready, vllm-1 becomes ready, vllm-0 is deleted (terminating, then gone)
    assert seen == [["10.8.0.11:8000"], ["10.8.0.11:8000", "10.8.0.12:8000"], ["10.8.0.12:8000"]]

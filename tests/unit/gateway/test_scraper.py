import asyncio
import time
from pathlib import Path


from inferstack.gateway.datastore import Datastore
from inferstack.gateway.scraper import Scraper, parse_vllm_metrics

RECORDED = (Path(__file__).parent / "data" / "vllm-0.32-metrics.txt").read_text()


def test_parse_recorded_vllm_032_metrics():
    m = parse_vllm_metrics(RECORDED, now=123.0)
    assert (m.waiting, m.running, m.kv_usage) == (0.0, 0.0, 0.0)
    assert m.block_size == 128
    assert m.scraped_at == 123.0
    assert m.active_loras == frozenset() and m.max_loras == 0


def test_parse_values_sums_engines_and_reads_lora_info():
    text = "\n".join([
        "# HELP vllm:num_requests_waiting Number of requests waiting.",
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0',
        'vllm:num_requests_waiting{engine="1",model_name="m"} 2.0',
        'vllm:num_requests_running{engine="0",model_name="m"} 4.0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25',
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters=""} 100.0',
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="c",waiting_lora_adapters="d"} 200.0',
        "vllm:num_requests_waiting{broken 1.0 x",
    ])
    m = parse_vllm_metrics(text)
    assert (m.waiting, m.running, m.kv_usage) == (5.0, 4.0, 0.25)
    assert m.active_loras == {"c"} and m.waiting_loras == {"d"} and m.max_loras == 2  # latest timestamp wins


def test_gpu_cache_usage_fallback():
    assert parse_vllm_metrics('vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n').kv_usage == 0.5
    both = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:kv_cache_usage_perc{model_name="m"} 0.1\n'
    assert parse_vllm_metrics(both).kv_usage == 0.1


def test_datastore_membership_and_readiness():
    ds = Datastore()
    assert ds.set_addresses(["a:1", "b:1"]) == (["a:1", "b:1"], [])
    assert ds.ready() == []
    ds.get("a:1").in_flight = 3
    ds.update_metrics("a:1", parse_vllm_metrics("", now=time.monotonic()))
    assert [e.address for e in ds.ready()] == ["a:1"] and ds.get("a:1").in_flight == 0
    ds.mark_failed("a:1", "boom")
    assert ds.ready() == []
    assert ds.set_addresses(["b:1", "c:1"]) == (["c:1"], ["a:1"])
    v = ds.version
    ds.set_addresses(["b:1", "c:1"])
    assert ds.version == v


class _MetricsServer:
    """A real HTTP server whose /metrics answer we control."""

    def __init__(self) -> None:
        self.body = b'vllm:num_requests_waiting{model_name="m"} 7.0\n'
        self.status = 200

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (self.status, len(self.body))
                     + self.body)
        await writer.drain()
        writer.close()


def test_scraper_tracks_an_endpoint_dropping_out_and_back():
    async def main() -> None:
        srv = _MetricsServer()
        server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ds = Datastore()
        ds.set_addresses([f"127.0.0.1:{port}"])
        results: list[bool] = []
        scraper = Scraper(ds, interval_s=0.02, timeout_s=0.5, on_scrape=lambda a, ok: results.append(ok))
        scraper.sync()

        async def until(cond, timeout=5.0):
            deadline = time.monotonic() + timeout
            while not cond():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

        await until(lambda: len(ds.ready()) == 1)
        assert ds.ready()[0].metrics.waiting == 7.0
        srv.status = 500
        await until(lambda: not ds.ready())
        srv.status = 200
        await until(lambda: len(ds.ready()) == 1)
        assert False in results and results[-1] is True
        ds.set_addresses([])
        scraper.sync()
        await scraper.stop()
        server.close()

    asyncio.run(main())

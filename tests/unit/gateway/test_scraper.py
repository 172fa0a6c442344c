import asyncio
import logging
import time
from pathlib import Path

from inferstack.engine.metrics import PickerFigures, parse_picker_figures
from inferstack.gateway.datastore import Datastore, EndpointMetrics
from inferstack.gateway.epp_metrics import EppMetrics
from inferstack.gateway.scheduling import Scheduler
from inferstack.gateway.scraper import Scraper, endpoint_metrics
from inferstack.gateway.settings import SchedulerSettings

from .conftest import PageServer, until

RECORDED = (Path(__file__).parent / "data" / "vllm-0.32-metrics.txt").read_text()
GOOD = (b'vllm:num_requests_waiting{engine="0",model_name="m"} 7.0\n'
        b'vllm:num_requests_running{engine="0",model_name="m"} 1.0\n'
        b'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n')


def test_recorded_vllm_032_page_maps_to_endpoint_metrics():
    figures = parse_picker_figures(RECORDED)
    assert isinstance(figures, PickerFigures)
    m = endpoint_metrics(figures, 123.0)
    assert (m.waiting, m.running, m.kv_usage) == (0.0, 0.0, 0.0)
    assert m.block_size == 128 and m.scraped_at == 123.0
    assert m.active_loras == frozenset() and m.max_loras == 0


def test_datastore_membership_and_readiness():
    ds = Datastore()
    assert ds.set_addresses(["a:1", "b:1"]) == (["a:1", "b:1"], [])
    assert ds.ready() == []
    ds.get("a:1").in_flight = 3
    ds.update_metrics("a:1", EndpointMetrics(scraped_at=time.monotonic()))
    assert [e.address for e in ds.ready()] == ["a:1"] and ds.get("a:1").in_flight == 0
    ds.mark_failed("a:1", "boom")
    assert ds.ready() == []
    assert ds.set_addresses(["b:1", "c:1"]) == (["c:1"], ["a:1"])
    v = ds.version
    ds.set_addresses(["b:1", "c:1"])
    assert ds.version == v


def _metrics_server() -> PageServer:
    return PageServer("/metrics", GOOD, b"text/plain; version=0.0.4")


async def _start(srv: PageServer, **kw):
    address = await srv.start()
    ds = Datastore()
    ds.set_addresses([address])
    scraper = Scraper(ds, interval_s=0.02, timeout_s=0.5, **kw)
    scraper.sync()
    return srv, address, ds, scraper


def test_scraper_tracks_an_endpoint_dropping_out_and_back():
    async def main() -> None:
        srv = _metrics_server()
        results: list[bool] = []
        server, _, ds, scraper = await _start(srv, on_scrape=lambda a, ok: results.append(ok))
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


BAD_BODIES = {
    "html": b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n",
    "garbage": bytes(range(256)) * 4,
    "no vllm series": b"# TYPE process_open_fds gauge\nprocess_open_fds 12.0\npython_info 1.0\n",
    "broken queue line": GOOD.replace(b'model_name="m"} 7.0', b'model_name="m" 7.0'),
    "empty": b"",
}


def test_unusable_pages_make_metrics_stale_counted_and_logged_once(caplog):
    async def main() -> None:
        srv = _metrics_server()
        metrics = EppMetrics(Datastore(), Scheduler(SchedulerSettings()))
        server, address, ds, scraper = await _start(srv, observer=metrics)
        reg = metrics.registry

        def count(outcome: str) -> float:
            return reg.get_sample_value("inferstack_epp_scrapes_total", {"endpoint": address, "outcome": outcome}) or 0

        await until(lambda: len(ds.ready()) == 1)
        assert metrics.model_label("m") == "m"  # learned from the scraped model_name label
        for kind, body in BAD_BODIES.items():
            caplog.clear()
            good_at = ds.get(address).metrics.scraped_at
            before = count("parse_error")
            srv.body = body
            srv.content_type = b"text/html" if kind == "html" else b"text/plain"
            await until(lambda: count("parse_error") >= before + 5)
            ep = ds.get(address)
            assert ep.metrics.scraped_at == good_at, kind  # not updated: it ages into "unknown"
            assert not ep.fresh(0.05), kind
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and address in r.getMessage()]
            assert len(warnings) == 1 and "unusable" in warnings[0].getMessage(), (kind, warnings)
            srv.body = GOOD
            n = count("ok")
            await until(lambda: count("ok") >= n + 1)
            assert ds.get(address).fresh(1.0)
        assert scraper._tasks[address].done() is False
        await scraper.stop()
        server.close()

    with caplog.at_level(logging.INFO, logger="inferstack.gateway.scraper"):
        asyncio.run(main())


def test_an_exception_in_one_iteration_does_not_end_the_scrape_task(caplog):
    async def main() -> None:
        srv = _metrics_server()
        calls: list[str] = []

        class Flaky:
            def observe_scrape(self, address, outcome, models):
                calls.append(outcome)
                if len(calls) <= 3:
                    raise RuntimeError("observer bug")

        server, address, ds, scraper = await _start(srv, observer=Flaky())
        await until(lambda: len(calls) >= 8)
        assert not scraper._tasks[address].done()
        await scraper.stop()
        server.close()

    with caplog.at_level(logging.ERROR, logger="inferstack.gateway.scraper"):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "scrape goes on" in errors[0].getMessage()


def test_a_runaway_page_is_refused_unread(monkeypatch):
    import inferstack.gateway.scraper as scraper_module

    monkeypatch.setattr(scraper_module, "MAX_PAGE_BYTES", 1000)

    async def main() -> None:
        srv = _metrics_server()
        srv.body = GOOD + b"# padding\n" * 200
        outcomes: list[str] = []

        class Record:
            def observe_scrape(self, address, outcome, models):
                outcomes.append(outcome)

        server, address, ds, scraper = await _start(srv, observer=Record())
        await until(lambda: len(outcomes) >= 2)
        assert set(outcomes) == {"parse_error"} and not ds.ready()
        await scraper.stop()
        server.close()

    asyncio.run(main())

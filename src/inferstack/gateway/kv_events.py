"""KV events from the replicas: which prompt blocks each one really holds in its prefix cache.

Each vLLM replica publishes its KV-cache events (``--kv-events-config``, ZMQ PUB): one multipart
message per engine step, ``[topic, sequence number (8 bytes, big-endian), payload]``, the payload a
msgpack ``EventBatch`` ``[ts, events, data_parallel_rank?]`` whose events are maps tagged ``type``:
``BlockStored`` (``block_hashes``, ``parent_block_hash``, the full blocks' ``token_ids``,
``block_size``, ``lora_name``, ...), ``BlockRemoved`` (``block_hashes``), ``AllBlocksCleared``. Its
ROUTER socket replays the buffered batches from a sequence number: ``[b"", start]`` in,
``[b"", topic, seq, payload]`` per batch out, then ``[b"", b"", -1, b""]``.

``decode_batch`` reads one payload into typed events. ``KvBlockIndex`` (pure) keeps per endpoint
the blocks it holds under our own key: a chain hash over each block's token ids (seeded by the
adapter's name), so the picker needs neither vLLM's hash function nor its seed, and a request's
blocks are keyed the same way from its own token ids (``block_keys``). ``KvEventSubscriber`` (one
thread) connects to each endpoint's publisher, replays from 0 on connect and from the next expected
sequence number after a gap, and applies the batches to the index in order.
Invariants: an endpoint's index holds the blocks stored and not removed since its last clear; a
block whose parent the index does not know is not indexed (its chain cannot be keyed), nor are the
blocks after it in its event; at most ``max_blocks`` per endpoint (the oldest go first); a batch is
applied once, in sequence order.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

__all__ = ["AllBlocksCleared", "BlockRemoved", "BlockStored", "KvBlockIndex", "KvEvent", "KvEventSubscriber",
           "block_keys", "decode_batch"]

log = logging.getLogger(__name__)

_END_SEQ = -1  # the replay's end marker (signed)


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_name: str | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared
_decoder = msgspec.msgpack.Decoder()


def decode_batch(payload: bytes) -> list[KvEvent]:
    """The events of one ``EventBatch`` payload; ValueError when it is not one. Event kinds this
    version does not know are skipped (vLLM may add some)."""
    try:
        batch = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a msgpack EventBatch: {exc}") from None
    if not isinstance(batch, list) or len(batch) < 2 or not isinstance(batch[1], list):
        raise ValueError("an EventBatch is [ts, events, ...]")
    events: list[KvEvent] = []
    for raw in batch[1]:
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind == "BlockStored":
            events.append(BlockStored(tuple(raw["block_hashes"]), raw.get("parent_block_hash"),
                                      tuple(raw["token_ids"]), int(raw["block_size"]), raw.get("lora_name")))
        elif kind == "BlockRemoved":
            events.append(BlockRemoved(tuple(raw["block_hashes"])))
        elif kind == "AllBlocksCleared":
            events.append(AllBlocksCleared())
    return events


def _seed(lora_name: str | None) -> int:
    # stable across processes (str hashes are salted per process): two pickers key alike
    if not lora_name:
        return 0
    return int.from_bytes(hashlib.blake2b(lora_name.encode(), digest_size=8).digest(), "big")


def _chain(parent: int, tokens: Sequence[int]) -> int:
    return hash((parent, *tokens))  # ints and tuples of ints hash the same in every process


def block_keys(token_ids: Sequence[int], block_size: int, lora_name: str | None = None) -> list[int]:
    """Our keys of the full blocks of a request's tokens, in order."""
    keys, parent = [], _seed(lora_name)
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = _chain(parent, token_ids[start:start + block_size])
        keys.append(parent)
    return keys


class _Blocks:
    __slots__ = ("by_vllm", "keys")

    def __init__(self) -> None:
        self.by_vllm: dict[int, int] = {}  # vLLM's block hash -> our key (insertion order: oldest first)
        self.keys: dict[int, int] = {}  # our key -> how many of vLLM's blocks have it

    def drop(self, vllm_hash: int) -> None:
        key = self.by_vllm.pop(vllm_hash, None)
        if key is not None:
            n = self.keys[key] - 1
            if n:
                self.keys[key] = n
            else:
                del self.keys[key]


class KvBlockIndex:
    """Per endpoint, the blocks it holds (pure: fed decoded events; thread-safe)."""

    def __init__(self, max_blocks: int = 200_000) -> None:
        self.max_blocks = max_blocks
        self._endpoints: dict[str, _Blocks] = {}
        self._lock = threading.Lock()

    def apply(self, endpoint: str, events: Sequence[KvEvent]) -> None:
        with self._lock:
            blocks = self._endpoints.setdefault(endpoint, _Blocks())
            for event in events:
                if isinstance(event, BlockStored):
                    self._store(blocks, event)
                elif isinstance(event, BlockRemoved):
                    for h in event.block_hashes:
                        blocks.drop(h)
                else:
                    blocks.by_vllm.clear()
                    blocks.keys.clear()
            while len(blocks.by_vllm) > self.max_blocks:
                blocks.drop(next(iter(blocks.by_vllm)))

    @staticmethod
    def _store(blocks: _Blocks, event: BlockStored) -> None:
        if event.parent_block_hash is None:
            parent = _seed(event.lora_name)
        elif (known := blocks.by_vllm.get(event.parent_block_hash)) is not None:
            parent = known
        else:
            return  # the parent was never seen (or already removed): this chain cannot be keyed
        size = event.block_size
        for i, vllm_hash in enumerate(event.block_hashes):
            tokens = event.token_ids[i * size:(i + 1) * size]
            if len(tokens) < size:
                return
            parent = _chain(parent, tokens)
            if vllm_hash not in blocks.by_vllm:
                blocks.by_vllm[vllm_hash] = parent
                blocks.keys[parent] = blocks.keys.get(parent, 0) + 1

    def forget(self, endpoint: str) -> None:
        """The endpoint left or restarted: nothing of its cache is known any more."""
        with self._lock:
            self._endpoints.pop(endpoint, None)

    def cached_blocks(self, endpoint: str, keys: Sequence[int]) -> int:
        """How many of ``keys`` (a request's blocks, in order) ``endpoint`` holds from the start."""
        with self._lock:
            blocks = self._endpoints.get(endpoint)
            if blocks is None:
                return 0
            n = 0
            for key in keys:
                if key not in blocks.keys:
                    break
                n += 1
            return n

    def size(self, endpoint: str) -> int:
        with self._lock:
            blocks = self._endpoints.get(endpoint)
            return len(blocks.by_vllm) if blocks is not None else 0

    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)


class KvEventSubscriber:
    """One thread following every endpoint's KV events into ``index``. ``publisher(address)`` and
    ``replayer(address)`` give the ZMQ addresses of an endpoint (``host:port`` of its OpenAI API);
    ``set_endpoints`` (from any thread) says which to follow; ``on_batch(address, seq)`` is told of
    each batch applied (metrics)."""

    def __init__(self, index: KvBlockIndex, publisher: Callable[[str], str], replayer: Callable[[str], str],
                 on_batch: Callable[[str, int], None] | None = None, on_gap: Callable[[str], None] | None = None,
                 replay_timeout_s: float = 2.0) -> None:
        self.index = index
        self._publisher, self._replayer = publisher, replayer
        self._on_batch = on_batch or (lambda _a, _s: None)
        self._on_gap = on_gap or (lambda _a: None)
        self.replay_timeout_s = replay_timeout_s
        self._commands: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_endpoints(self, addresses: Sequence[str]) -> None:
        self._commands.put(("set", "\n".join(addresses)))

    def restarted(self, address: str) -> None:
        """The endpoint came back (a new vLLM process): forget it and replay its history."""
        self._commands.put(("restart", address))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kv-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import zmq

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        subs: dict[str, zmq.Socket[bytes]] = {}  # address -> SUB socket
        last: dict[str, int] = {}  # address -> last sequence number applied (-1: none)
        poller = zmq.Poller()

        def follow(address: str) -> None:
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(self._publisher(address))
            subs[address] = sock
            poller.register(sock, zmq.POLLIN)
            last[address] = -1
            self._replay(ctx, address, last)

        def unfollow(address: str) -> None:
            sock = subs.pop(address, None)
            if sock is not None:
                poller.unregister(sock)
                sock.close()
            last.pop(address, None)
            self.index.forget(address)

        try:
            while not self._stop.is_set():
                while True:
                    try:
                        command, arg = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if command == "set":
                        wanted = set(filter(None, arg.split("\n")))
                        for address in set(subs) - wanted:
                            unfollow(address)
                        for address in wanted - set(subs):
                            follow(address)
                    elif command == "restart" and arg in subs:
                        self.index.forget(arg)
                        last[arg] = -1
                        self._replay(ctx, arg, last)
                for sock, _ in poller.poll(100):
                    address = next(a for a, s in subs.items() if s is sock)
                    _topic, seq_bytes, payload = sock.recv_multipart()
                    seq = int.from_bytes(seq_bytes, "big", signed=True)
                    if seq == 0 and last[address] > 0:  # a new vLLM process counts from 0 again
                        self.index.forget(address)
                        last[address] = -1
                    if seq <= last[address]:
                        continue  # replayed already
                    if seq != last[address] + 1:  # a gap (or a restarted publisher counting from 0 again)
                        self._on_gap(address)
                        self._replay(ctx, address, last)
                        if seq <= last[address]:
                            continue
                    self._apply(address, seq, payload, last)
        finally:
            for sock in subs.values():
                sock.close()

    def _apply(self, address: str, seq: int, payload: bytes, last: dict[str, int]) -> None:
        try:
            events = decode_batch(payload)
        except ValueError as exc:
            log.warning("endpoint %s: KV event batch %d unreadable (%s); skipped", address, seq, exc)
            events = []
        self.index.apply(address, events)
        last[address] = seq
        self._on_batch(address, seq)

    def _replay(self, ctx: object, address: str, last: dict[str, int]) -> None:
        """Ask the endpoint's replay socket for every batch after ``last[address]`` and apply them;
        a publisher that does not answer in time leaves the index as it is (live events continue)."""
        import zmq

        assert isinstance(ctx, zmq.Context)
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            dealer.connect(self._replayer(address))
            dealer.send_multipart([b"", (last[address] + 1).to_bytes(8, "big")])
            while dealer.poll(int(self.replay_timeout_s * 1000)):
                frames = dealer.recv_multipart()
                if len(frames) != 4:
                    continue
                _, _topic, seq_bytes, payload = frames
                seq = int.from_bytes(seq_bytes, "big", signed=True)
                if seq == _END_SEQ:
                    return
                if seq > last[address]:
                    if seq != last[address] + 1 and last[address] >= 0:
                        self._on_gap(address)  # the publisher's buffer no longer holds the missed batches
                    self._apply(address, seq, payload, last)
        finally:
            dealer.close()

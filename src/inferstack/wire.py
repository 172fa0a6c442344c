"""One vocabulary for the wire, each name defined once: vLLM's metric names, the gateway headers
(GIE's), and the OpenAI Batch API's statuses. Every component reads them from here, so a rename
upstream is one edit and a test (``tests/unit/test_wire.py``) keeps literals from creeping back.

``VllmMetric`` members are metric *family* names as vLLM 0.32's ``/metrics`` declares them
(``# TYPE``); a counter's samples carry ``_total`` (``VllmMetric.GENERATION_TOKENS.total``), a
histogram's ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BATCH_ACTIVE_STATUSES", "BATCH_TERMINAL_STATUSES", "DESTINATION_HEADER", "ENVOY_LB_NAMESPACE",
           "ENVOY_STAT_PREFIX", "FAIRNESS_ID_HEADER", "OBJECTIVE_HEADER", "RESPONSE_HEADERS_NAMESPACE",
           "ROUTE_NOTE_HEADER", "USAGE_NAMESPACE", "BatchStatus", "VllmMetric"]


class VllmMetric(StrEnum):
    # gauges: load and cache
    WAITING = "vllm:num_requests_waiting"
    RUNNING = "vllm:num_requests_running"
    KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
    GPU_CACHE_USAGE = "vllm:gpu_cache_usage_perc"  # the name before vLLM 0.10
    LORA_REQUESTS_INFO = "vllm:lora_requests_info"
    CACHE_CONFIG_INFO = "vllm:cache_config_info"
    # counters
    GENERATION_TOKENS = "vllm:generation_tokens"
    PROMPT_TOKENS = "vllm:prompt_tokens"
    REQUEST_SUCCESS = "vllm:request_success"
    PREEMPTIONS = "vllm:num_preemptions"
    PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"
    PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"
    SPEC_DRAFTS = "vllm:spec_decode_num_drafts"
    SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
    SPEC_ACCEPTED_TOKENS = "vllm:spec_decode_num_accepted_tokens"
    SPEC_ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
    # histograms
    TTFT = "vllm:time_to_first_token_seconds"
    ITL = "vllm:inter_token_latency_seconds"
    E2E = "vllm:e2e_request_latency_seconds"
    TPOT = "vllm:request_time_per_output_token_seconds"
    QUEUE_TIME = "vllm:request_queue_time_seconds"

    @property
    def total(self) -> str:
        """The sample name of a counter family."""
        return f"{self.value}_total"


# Gateway API Inference Extension (GIE) headers and Envoy metadata
DESTINATION_HEADER = "x-gateway-destination-endpoint"  # the picker's answer: ip:port[,fallback...]
ENVOY_LB_NAMESPACE = "envoy.lb"  # the same key under this dynamic-metadata namespace
OBJECTIVE_HEADER = "x-gateway-inference-objective"  # an InferenceObjective's name
FAIRNESS_ID_HEADER = "x-gateway-inference-fairness-id"  # the tenant, for fair queuing
# Between the picker and the gateway's Lua filter, in Envoy's dynamic metadata: headers the picker
# wants on the answer (name -> value), and the tokens of the response (prompt_tokens,
# completion_tokens, reported), which reach the picker in the access log.
RESPONSE_HEADERS_NAMESPACE = "inferstack.response_headers"
# The gateway's HTTP connection manager stat prefix: its Prometheus series carry
# envoy_http_conn_manager_prefix="gateway" (the dashboards and alerts select on it).
ENVOY_STAT_PREFIX = "gateway"
USAGE_NAMESPACE = "inferstack.usage"
# With several pickers: the routed request's tenant and token counts, set by the picker that routed
# it as a request header; Envoy's logs bring it to every picker (dynamic metadata is not in an
# upstream log, a request header is).
ROUTE_NOTE_HEADER = "x-inferstack-route"


class BatchStatus(StrEnum):
    """An OpenAI Batch object's ``status``."""
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


BATCH_ACTIVE_STATUSES = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                         BatchStatus.CANCELLING)
BATCH_TERMINAL_STATUSES = (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)

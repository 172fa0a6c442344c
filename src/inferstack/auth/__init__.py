"""API keys and tenants: who sent a request (``Authorization: Bearer <key>``, or GIE's
``x-gateway-inference-fairness-id`` without keys), read by the picker and the batch service."""

from inferstack.auth.keys import (
    MISSING_KEY_MESSAGE,
    SERVICE,
    ApiKeyEntry,
    KeyFileWatch,
    KeyRefused,
    KeyRing,
    Tenant,
    bearer_token,
    hash_key,
    identify,
    load_key_file,
    mask_key,
    new_key,
    read_key,
    wrong_key_message,
)
from inferstack.auth.settings import AuthSettings

__all__ = ["MISSING_KEY_MESSAGE", "SERVICE", "ApiKeyEntry", "AuthSettings", "KeyFileWatch", "KeyRefused", "KeyRing",
           "Tenant", "bearer_token", "hash_key", "identify", "load_key_file", "mask_key", "new_key", "read_key",
           "wrong_key_message"]

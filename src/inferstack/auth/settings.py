"""The ``auth:`` section of the stack config."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AuthSettings"]


class AuthSettings(BaseModel):
    """API keys for the whole stack: the gateway (every inference request) and the batch API."""

    model_config = ConfigDict(extra="forbid")

    file: Path = Field(description="The API key file (a YAML list of {key | key_sha256 | key_env, tenant, "
                       "priority?, requests_per_minute?, tokens_per_minute?}); read again when it changes.")

    @field_validator("file")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # the detached supervisor and the picker run elsewhere than the `up` that named it
        return path.expanduser().absolute()

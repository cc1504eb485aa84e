"""Fireworks wire models.

Fireworks speaks proto3 JSON: camelCase on the wire, but its parsers take the
proto field names (snake_case) too, and some clients send those. Every model
here accepts both spellings. Unknown fields are ignored, so a resource read
back and sent again (with ``name``, ``state`` ...) is accepted.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from inferq.api.chat import NonNegativeInt32, NonNegativeInt64, PositiveInt32


class Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="ignore"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # proto3 clients send "" for a string they leave unset
        return None if value == "" else value


class DatasetIn(Wire):
    display_name: str | None = None
    format: str | None = None
    #: an int64, which proto3 JSON writes as a string
    example_count: NonNegativeInt64 | None = None
    user_uploaded: dict[str, Any] | None = None
    external_url: str | None = None
    source_job_name: str | None = None


class DatasetCreate(Wire):
    dataset_id: str
    dataset: DatasetIn
    source_dataset_id: str | None = None
    filter: str | None = None


class DatasetUpdate(Wire):
    display_name: str | None = None
    format: str | None = None
    example_count: NonNegativeInt64 | None = None


class UploadEndpointRequest(Wire):
    #: file name -> size in bytes (an int64, so usually a string)
    filename_to_size: dict[str, int] = Field(min_length=1)
    read_mask: str | None = None


class InferenceParameters(Wire):
    max_tokens: PositiveInt32 | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: NonNegativeInt32 | None = None
    n: PositiveInt32 | None = None
    #: more chat-body fields, as a JSON object in a string
    extra_body: str | None = None


class JobCreate(Wire):
    model: str | None = None
    input_dataset_id: str | None = None
    output_dataset_id: str | None = None
    display_name: str | None = None
    inference_parameters: InferenceParameters | None = None
    precision: str | None = None
    continued_from_job_name: str | None = None

"""Request bodies of the routes, as OpenAI's and text-embeddings-inference's (TEI) clients send them.

Unknown fields are accepted and ignored (clients send more than a server uses); a field of the wrong type or
out of range makes a 422 that names it.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

TokenIds = list[int]
Direction = Literal["Right", "Left", "right", "left"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- OpenAI ------------------------------------------------------------------------------------------------
class EmbeddingRequest(_Body):
    input: Union[str, list[str], TokenIds, list[TokenIds]]
    model: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, gt=0)
    user: Optional[str] = None


class _Sampling(_Body):
    model: Optional[str] = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream_options: Optional[dict] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings")
        return stops


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], TokenIds, list[TokenIds]]
    max_tokens: Optional[int] = Field(16, ge=1)


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[dict], None] = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


# -- text-embeddings-inference ---------------------------------------------------------------------------------
class EmbedRequest(_Body):
    inputs: Union[str, list[str], TokenIds, list[TokenIds]]
    normalize: bool = True
    truncate: bool = False
    truncation_direction: Direction = "Right"
    prompt_name: Optional[str] = None
    dimensions: Optional[int] = Field(None, gt=0)


class RerankRequest(_Body):
    query: str
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: Direction = "Right"


class PredictRequest(_Body):
    inputs: Union[str, list[str], list[list[str]]]
    raw_scores: bool = False
    truncate: bool = False
    truncation_direction: Direction = "Right"

"""Request and response bodies of the reward server (pydantic: FastAPI validates requests and documents both).

Two request shapes: our own `/v1/score` (items as prompt + response, or as a chat conversation whose last
message is the response to score) and OpenRLHF's remote reward-model contract on `/get_reward`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from criticrm.data.readers import ROLES, render_transcript
from criticrm.data.text import unicode_problem
from criticrm.inference.scorer import CritiqueReward, ScoreItem, ScoreResult


def _valid_unicode(text: str) -> str:
    """Python's JSON parser (FastAPI's) accepts an unpaired `\\ud800` escape; no tokenizer takes the result."""
    problem = unicode_problem(text)
    if problem:
        raise ValueError(f"the text {problem}")
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class Message(BaseModel):
    role: str
    content: Text

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        return role


class Item(BaseModel):
    """One response to score: `prompt` + `response`, or `messages` ending with the assistant response."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text | None = None
    response: Text | None = None
    messages: list[Message] | None = None
    domain: Text | None = Field(default=None, description="general | safety | reasoning: the judge template")
    subset: Text | None = Field(default=None, description="a subset name the judge template is guessed from")

    @model_validator(mode="after")
    def _one_form(self) -> Item:
        if self.messages is not None:
            if self.prompt is not None or self.response is not None:
                raise ValueError("give either prompt and response, or messages, not both")
            if len(self.messages) < 2 or self.messages[-1].role != "assistant":
                raise ValueError("messages must hold the conversation and, last, the assistant response "
                                 "to score")
        elif self.prompt is None or self.response is None:
            raise ValueError("each item needs prompt and response (strings), or messages")
        return self

    def chars(self) -> int:
        if self.messages is not None:
            return sum(len(m.content) for m in self.messages)
        return len(self.prompt) + len(self.response)

    def to_score_item(self) -> ScoreItem:
        """The conversation before the response is rendered as the data layer renders chat prompts."""
        if self.messages is not None:
            *conversation, last = self.messages
            prompt = render_transcript([m.model_dump() for m in conversation])
            return ScoreItem(prompt, last.content, self.domain, self.subset)
        return ScoreItem(self.prompt, self.response, self.domain, self.subset)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(min_length=1)
    num_critiques: int | None = Field(default=None, ge=1, description="critiques per response")
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                      description="critique sampling temperature")


class CritiqueOut(BaseModel):
    critique: str
    reward: float | None
    finish_reason: str = Field(description="stop, or length when the critique was cut at max_new_tokens")

    @classmethod
    def of(cls, critique: CritiqueReward) -> CritiqueOut:
        return cls(critique=critique.critique, reward=finite(critique.reward),
                   finish_reason=critique.finish_reason)


class ResultOut(BaseModel):
    reward: float | None = Field(description="mean reward over the critiques; null if it could not be scored")
    spread: float | None = Field(description="standard deviation of the per-critique rewards")
    critiques: list[CritiqueOut]

    @classmethod
    def of(cls, result: ScoreResult) -> ResultOut:
        return cls(reward=finite(result.reward), spread=finite(result.spread),
                   critiques=[CritiqueOut.of(c) for c in result.critiques])


class ScoreResponse(BaseModel):
    results: list[ResultOut]
    model: str
    mode: str


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request: `query[i]` is `prompts[i]` followed by the response."""

    query: list[Text] = Field(min_length=1)
    prompts: list[Text] | None = None
    labels: list[Any] | None = Field(default=None, description="ground-truth labels; accepted and not used")


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="the rewards again (OpenRLHF reads them for dynamic filtering)")
    extra_logs: dict[str, list[float]] = Field(description="numeric per-query values OpenRLHF logs")
    critiques: list[list[CritiqueOut]]


def finite(value: float) -> float | None:
    """NaN (an item the model could not score) as JSON null: JSON has no NaN."""
    return None if math.isnan(value) else value

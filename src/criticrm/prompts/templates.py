"""Judge prompt templates: one per domain (general, safety, reasoning), each with few-shot critiques.

A template turns (prompt, response) into chat messages: a system turn, the few-shot examples as
earlier user/assistant turns (small models follow the "Score: k/10" ending only when shown it), and
the pair to judge as the last user turn. Users can supply their own template as a YAML file with
the same fields as the files in `prompts/builtin/`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from criticrm.errors import CriticRMError

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_NAMES = ("general", "safety", "reasoning")

# Subset names (RewardBench and the bundled sources) that imply a domain when a row names none.
_DOMAIN_KEYWORDS = {
    "safety": ("harmless", "safety", "refuse", "respond", "xstest", "donotanswer", "toxic"),
    "reasoning": ("math", "code", "gsm", "sci-", "prm", "reason", "hep-", "judgebench"),
}


class TemplateError(CriticRMError):
    """A template file is missing, unreadable or lacks a field."""


@dataclass(frozen=True)
class FewShotExample:
    prompt: str
    response: str
    critique: str


def content_hash(template) -> str:
    """Short hash of a template dataclass's content, stored with every result made from it, so that
    results of a changed template are never mixed silently with older ones."""
    payload = json.dumps(asdict(template), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    system: str
    instruction: str
    user_format: str
    score_prefix: str = "Score: "
    description: str = ""
    examples: tuple[FewShotExample, ...] = field(default_factory=tuple)

    @property
    def hash(self) -> str:
        return content_hash(self)

    def user_turn(self, prompt: str, response: str) -> str:
        return self.user_format.format(instruction=self.instruction, prompt=prompt, response=response)

    def messages(self, prompt: str, response: str, few_shot: bool = True) -> list[dict[str, str]]:
        """Chat messages asking for a critique of `response` to `prompt`.

        `few_shot=False` leaves the examples out: a fine-tuned Critic-RM has learnt the format, and
        the examples would cost ~400 tokens of every training and scoring sequence.
        """
        messages = [{"role": "system", "content": self.system}]
        for example in self.examples if few_shot else ():
            messages.append({"role": "user", "content": self.user_turn(example.prompt, example.response)})
            messages.append({"role": "assistant", "content": example.critique})
        messages.append({"role": "user", "content": self.user_turn(prompt, response)})
        return messages


def load_template(source: str | Path) -> JudgeTemplate:
    """Load a built-in template by name, or a user template from a YAML file."""
    path = BUILTIN_DIR / f"{source}.yaml" if str(source) in BUILTIN_NAMES else Path(source)
    if not path.is_file():
        raise TemplateError(f"template {str(source)!r}: not a built-in ({', '.join(BUILTIN_NAMES)}) nor a file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise TemplateError(f"{path}: not a readable YAML template ({error})") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: expected a mapping of template fields")
    missing = [name for name in ("name", "system", "instruction", "user_format") if not isinstance(raw.get(name), str)]
    if missing:
        raise TemplateError(f"{path}: missing or non-string field(s): {', '.join(missing)}")
    for placeholder in ("{prompt}", "{response}"):
        if placeholder not in raw["user_format"]:
            raise TemplateError(f"{path}: field 'user_format' must contain {placeholder}")
    examples = []
    for index, example in enumerate(raw.get("examples") or []):
        if not isinstance(example, dict) or not all(isinstance(example.get(k), str) for k in ("prompt", "response", "critique")):
            raise TemplateError(f"{path}: examples[{index}] needs string fields prompt, response and critique")
        examples.append(FewShotExample(example["prompt"], example["response"], example["critique"]))
    return JudgeTemplate(
        name=raw["name"], system=raw["system"], instruction=raw["instruction"].strip(),
        user_format=raw["user_format"], score_prefix=raw.get("score_prefix", "Score: "),
        description=raw.get("description", ""), examples=tuple(examples),
    )


def infer_domain(domain: str | None, subset: str | None) -> str:
    """The pair's explicit domain if it is a known one, else a guess from its subset name, else general."""
    if domain in BUILTIN_NAMES:
        return domain
    name = (subset or "").lower()
    for candidate, keywords in _DOMAIN_KEYWORDS.items():
        if any(keyword in name for keyword in keywords):
            return candidate
    return "general"


class TemplateSet:
    """Chooses the template for each pair: a forced template if given, else one per domain."""

    def __init__(self, forced: str | None = None):
        self.forced = load_template(forced) if forced else None
        self._builtins = {name: load_template(name) for name in BUILTIN_NAMES}

    def for_pair(self, domain: str | None, subset: str | None) -> JudgeTemplate:
        return self.forced or self._builtins[infer_domain(domain, subset)]

    def hashes(self) -> dict[str, str]:
        """Content hash of every template this set can choose (recorded with each stage's settings)."""
        if self.forced:
            return {self.forced.name: self.forced.hash}
        return {name: template.hash for name, template in self._builtins.items()}

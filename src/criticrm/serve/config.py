"""The reward server's options: where it listens, how it batches, what it refuses (CLI flags, YAML keys)."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

from criticrm.config import Config

TOKEN_ENV = "CRITICRM_SERVER_TOKEN"


@dataclass
class ServerConfig(Config):
    """How `criticrm serve` listens, batches and limits requests (YAML section `server`)."""

    host: str = field(default="127.0.0.1", metadata={
        "help": "address to bind; anything but loopback exposes the model, so set a token"})
    port: int = field(default=8000, metadata={"help": "TCP port (0: any free port, logged at start)", "min": 0,
                                              "max": 65535})
    token: str | None = field(default=None, metadata={
        "help": f"bearer token every request but /health must send (default: ${TOKEN_ENV}; unset: no auth)"})
    max_batch_size: int = field(default=32, metadata={
        "help": "responses scored together: items of concurrent requests are merged up to this many", "above": 0})
    max_wait_ms: float = field(default=10.0, metadata={
        "help": "longest wait for more requests after the first one arrives before a batch is scored", "min": 0})
    max_queue: int = field(default=1024, metadata={
        "help": "responses waiting to be scored; requests beyond it get 503 with Retry-After", "above": 0})
    max_items_per_request: int = field(default=256, metadata={"help": "responses one request may send", "above": 0})
    max_chars_per_item: int = field(default=32_000, metadata={
        "help": "longest prompt + response, in characters", "above": 0})
    max_body_bytes: int = field(default=8 * 1024 * 1024, metadata={"help": "largest request body, in bytes", "above": 0})
    max_num_critiques: int = field(default=16, metadata={
        "help": "largest num_critiques a request may ask for", "above": 0})
    request_timeout_s: float = field(default=600.0, metadata={
        "help": "a request still unscored after this many seconds gets 504; also the shutdown drain limit", "above": 0})
    strip_special_tokens: bool = field(default=True, metadata={
        "help": "remove the reward model's special-token strings (chat-template markup) from /get_reward "
                "queries, which RLHF frameworks send with the policy's chat template applied"})

    def __post_init__(self):
        super().__post_init__()
        if self.max_items_per_request > self.max_queue:
            raise ValueError(f"max_items_per_request ({self.max_items_per_request}) must not exceed "
                             f"max_queue ({self.max_queue}): such a request could never be queued")

    def limits(self) -> dict:
        """What clients may send (reported by /v1/info; the token is never reported)."""
        limits = {k: v for k, v in asdict(self).items() if k not in ("host", "port", "token")}
        return {**limits, "auth": self.token is not None}


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

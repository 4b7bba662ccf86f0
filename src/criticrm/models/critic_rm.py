"""The two-head reward model: any Hugging Face causal LM plus a small reward head on its last hidden state.

One forward pass serves both heads. The language-model head writes (and, in training, is scored on)
the critique; the reward head reads the final hidden state at the token that closes the critique
(mode `critic`, Critic-RM) or the response (mode `standard`, the classic Bradley-Terry RM baseline).
Language-model logits are computed only at the positions the caller asks for (the critique tokens), never
for the whole sequence: with a 49k vocabulary the full logits would cost more than the rest of the model.

A saved model is a folder that is, first of all, an ordinary Hugging Face causal-LM folder (config,
safetensors weights, tokenizer), so `AutoModelForCausalLM`, vLLM or llama.cpp can serve it for critique
generation. Its top level holds the LM's weights and nothing else that a loader reads: vLLM's default
loader reads every top-level `*.safetensors` when there is no index, and a reward head there would stop it
on unknown weight names. So the reward head, `criticrm_config.json` and a user's judge template live in
the `criticrm/` subfolder, which no LM loader looks into; a generated model card (`README.md`) says what
the folder is and how to score with it. Folders of earlier versions (head and config beside the LM) still
load. A LoRA model is saved either merged into full weights (servable) or as a `peft` adapter on its base
model (small, resumable); either way the head is saved too. Nothing is pickled.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from criticrm.errors import CriticRMError
from criticrm.models.backbone import (
    from_pretrained,
    pick_device,
    pick_dtype,
    quiet_hf_progress,
    resolve_model_path,
)
from criticrm.models.sequences import (
    MODES,
    TRUNCATION_POLICIES,
    EncodedSequence,
    SequenceBuilder,
    pad_sequences,
)

CONFIG_FILE = "criticrm_config.json"
HEAD_FILE = "reward_head.safetensors"
TEMPLATE_FILE = "judge_template.yaml"
CRITICRM_SUBDIR = "criticrm"  # the head, config and template: out of every causal-LM loader's way
FORMAT_VERSION = 1
READ_AT = {"critic": "end_of_critique", "standard": "end_of_response"}
PACKED_ATTENTION = ("sdpa", "eager")  # the attention kernels that take a packed row's 4-D mask as given


class RewardModelError(CriticRMError):
    """A reward-model folder is missing, incomplete or of another format version."""


@dataclass
class RewardModelConfig:
    """What a saved reward model needs besides its weights (stored as criticrm_config.json)."""

    mode: str = "critic"
    template: str | None = None  # judge template forced for every pair; None: chosen per pair domain
    max_length: int = 1024
    truncation: str = "middle"
    head_hidden_size: int = 0  # 0: a linear head; else a 2-layer MLP with this many hidden units
    head_init_std: float = 1e-3
    reward_mean: float | None = None  # statistics of r on the validation set, for optional normalisation
    reward_std: float | None = None
    reward_stats_source: str | None = None
    base_model: str | None = None  # the backbone it was trained from (None: the embedded default)
    adapter: bool = False  # True: the folder holds a peft LoRA adapter on `base_model`, not full weights
    templates: dict[str, str] = field(default_factory=dict)  # judge templates seen in training -> content hash
    # the margin the reward loss used: "data" (the user's column), "judge" (the base judge's score gap, an
    # ablation), "none"; None for folders saved before this was recorded (they trained on judge margins)
    training_margin: str | None = None
    dtype: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation must be one of {', '.join(TRUNCATION_POLICIES)}, got {self.truncation!r}")

    @property
    def read_at(self) -> str:
        return READ_AT[self.mode]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "read_at": self.read_at}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RewardModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class RewardModelOutput:
    rewards: torch.Tensor  # [num_sequences], float32
    lm_logits: torch.Tensor | None = None  # [num_label_positions, vocab] at the requested positions only


class RewardHead(nn.Module):
    """A linear layer (or a small MLP) from the last hidden state to one scalar; small initialisation."""

    def __init__(self, hidden_size: int, head_hidden_size: int = 0, init_std: float = 1e-3):
        super().__init__()
        if head_hidden_size:
            self.net = nn.Sequential(nn.Linear(hidden_size, head_hidden_size), nn.GELU(), nn.Linear(head_hidden_size, 1))
        else:
            self.net = nn.Linear(hidden_size, 1)
        for module in self.net.modules():
            if isinstance(module, nn.Linear):
                std = init_std if module.out_features == 1 else hidden_size ** -0.5
                nn.init.normal_(module.weight, mean=0.0, std=std)
                nn.init.zeros_(module.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)


class CriticRewardModel(nn.Module):
    """A causal LM (optionally wrapped by peft) and a reward head; see the module docstring."""

    main_input_name = "input_ids"

    def __init__(self, backbone: nn.Module, config: RewardModelConfig, head: RewardHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.reward_config = config
        self.reward_head = head or RewardHead(self.hidden_size, config.head_hidden_size, config.head_init_std)
        if config.mode == "standard":
            self._freeze_unused_lm_head()

    # ---- structure ------------------------------------------------------------------------------
    @property
    def causal_lm(self) -> nn.Module:
        """The Hugging Face causal LM (inside the peft wrapper when there is one)."""
        backbone = self.backbone
        if _is_peft(backbone):
            return backbone.base_model.model
        return backbone

    @property
    def decoder(self) -> nn.Module:
        lm = self.causal_lm
        return getattr(lm, lm.base_model_prefix)

    @property
    def is_lora(self) -> bool:
        return _is_peft(self.backbone)

    @property
    def _no_split_modules(self):  # read by accelerate's FSDP auto-wrap policy
        return getattr(self.causal_lm, "_no_split_modules", None)

    def _freeze_unused_lm_head(self) -> None:
        """Standard mode never uses an untied LM head; frozen, it holds no optimizer state and DDP ignores it."""
        lm = self.causal_lm
        head, embeddings = lm.get_output_embeddings(), lm.get_input_embeddings()
        if head is not None and embeddings is not None and head.weight is not embeddings.weight:
            head.weight.requires_grad_(False)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        """Recompute activations in the backward pass (less memory, ~30% more compute)."""
        kwargs_ = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        lm = self.causal_lm
        if hasattr(lm, "activation_checkpointing_enable"):
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs_)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs_)
        if kwargs_["use_reentrant"] and hasattr(lm, "enable_input_require_grads"):
            lm.enable_input_require_grads()

    gradient_checkpointing_enable = activation_checkpointing_enable

    # ---- computation ----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                read_positions: torch.Tensor | None = None, lm_positions: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, read_rows: torch.Tensor | None = None) -> RewardModelOutput:
        """Rewards of a batch, and LM logits at the flat positions `lm_positions` (row * width + column).

        `read_positions` [batch] is the index of the token each reward is read at; by default the last
        token the attention mask covers (correct for left and right padding). Position ids follow the
        attention mask, so a left-padded sequence gets the same positions as when it is alone.

        Packed rows (`criticrm.models.packing`: several sequences sharing prefixes in one row) come with a
        [rows, 1, width, width] boolean mask (True: may attend), their `position_ids`, and `read_rows`, the
        row of each reward (then `read_positions` holds its column, one entry per reward).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.dim() == 4:
            if position_ids is None or read_positions is None:
                raise ValueError("a 4-D attention mask (packed rows) needs position_ids and read_positions")
            attention_mask = self._packed_mask(attention_mask)
        elif position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state
        if read_positions is None:
            read_positions = last_token_positions(attention_mask)
        rows = torch.arange(hidden.shape[0], device=hidden.device) if read_rows is None else read_rows.to(hidden.device)
        at_read = hidden[rows, read_positions.to(hidden.device)]
        rewards = self.reward_head(at_read.to(self.reward_head_dtype)).float()
        lm_logits = None
        if lm_positions is not None:
            flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, lm_positions.to(hidden.device))
            lm_logits = self.lm_logits(flat)
        return RewardModelOutput(rewards=rewards, lm_logits=lm_logits)

    @property
    def hidden_size(self) -> int:
        return self.causal_lm.config.get_text_config().hidden_size

    @property
    def attention_implementation(self) -> str:
        return getattr(self.causal_lm.config, "_attn_implementation", None) or "eager"

    @property
    def takes_packed_rows(self) -> bool:
        """Whether packed rows (`forward`) compute what separate rows do: the attention kernel takes their 4-D
        mask as given, and no sliding-window layer could cut a sequence of up to `max_length` tokens (a
        given mask replaces the window's own, so such a layer would see past its window in a packed row)."""
        config = self.causal_lm.config.get_text_config()
        window = getattr(config, "sliding_window", None)
        windowed = window is not None and ("sliding_attention" in (getattr(config, "layer_types", None) or ())
                                           or getattr(config, "use_sliding_window", True))
        cuts = windowed and window < self.reward_config.max_length
        return self.attention_implementation in PACKED_ATTENTION and not cuts

    def _packed_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A packed batch's boolean mask in the form the attention kernel takes it as given: boolean for SDPA,
        additive (0 / most negative) for eager attention. Kernels that take no mask (flash attention) cannot
        run packed rows: the trainer packs only for these two."""
        implementation = self.attention_implementation
        if implementation == "sdpa":
            return mask.bool()
        if implementation == "eager":
            dtype = self.causal_lm.get_input_embeddings().weight.dtype
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask.bool(), torch.finfo(dtype).min)
        raise ValueError(f"packed rows need sdpa or eager attention; this model uses {implementation}")

    @property
    def reward_head_dtype(self) -> torch.dtype:
        return next(self.reward_head.parameters()).dtype

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on selected hidden states, with the output scaling some architectures apply."""
        lm = self.causal_lm
        logits = lm.get_output_embeddings()(hidden)
        config = lm.config.get_text_config()
        if getattr(config, "logit_scale", None):  # Cohere
            logits = logits * config.logit_scale
        if getattr(config, "logits_scaling", None):  # Granite
            logits = logits / config.logits_scaling
        if getattr(config, "final_logit_softcapping", None):  # Gemma 2/3
            cap = config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    @torch.no_grad()
    def reward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               read_positions: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
        """Rewards [batch] (float32, on the model's device); `normalize` uses the saved validation mean/std."""
        device = self.device
        mask = attention_mask.to(device) if attention_mask is not None else None
        rewards = self(input_ids.to(device), mask, read_positions).rewards
        return self.normalize(rewards) if normalize else rewards

    def has_reward_stats(self) -> bool:
        """Whether training saved the reward mean/std that `normalize` needs."""
        return self.reward_config.reward_mean is not None and bool(self.reward_config.reward_std)

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        if not self.has_reward_stats():
            raise RewardModelError("this model has no saved reward statistics (reward_mean/reward_std); "
                                   "score without normalisation")
        return (rewards - self.reward_config.reward_mean) / self.reward_config.reward_std

    @torch.no_grad()
    def rewards_for(self, sequences: list[EncodedSequence | list[int]], pad_token_id: int, batch_size: int = 8,
                    padding_side: str = "right", normalize: bool = False) -> list[float]:
        """Rewards of many sequences, batched by length (little padding), returned in input order."""
        was_training = self.training
        self.eval()
        ids = [list(s.input_ids) if isinstance(s, EncodedSequence) else list(s) for s in sequences]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[float] = [0.0] * len(ids)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = pad_sequences([ids[i] for i in chunk], pad_token_id, padding_side)
            rewards = self.reward(batch.input_ids, batch.attention_mask, batch.read_positions, normalize=normalize)
            for i, value in zip(chunk, rewards.tolist(), strict=True):
                out[i] = value
        self.train(was_training)
        return out

    def score_texts(self, tokenizer, items: list[tuple[str, str, str | None]], template: str | None = None,
                    batch_size: int = 8, normalize: bool = False) -> list[float]:
        """Rewards of (prompt, response, critique) triples (critique None in standard mode), in input order.

        Over-long items follow the model's truncation policy; with `drop` their reward is NaN.
        """
        sequences = self.sequence_builder(tokenizer).encode_many(items, template=template)
        kept = [i for i, s in enumerate(sequences) if s is not None]
        rewards = self.rewards_for([sequences[i] for i in kept], tokenizer.pad_token_id, batch_size,
                                   normalize=normalize)
        out = [float("nan")] * len(items)
        for i, reward in zip(kept, rewards, strict=True):
            out[i] = reward
        return out

    def sequence_builder(self, tokenizer) -> SequenceBuilder:
        """The builder that lays out (prompt, response[, critique]) exactly as in training."""
        return SequenceBuilder(tokenizer, mode=self.reward_config.mode, template=self.reward_config.template or "general",
                               max_length=self.reward_config.max_length, truncation=self.reward_config.truncation)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- construction, saving, loading --------------------------------------------------------------
    @classmethod
    def from_backbone(cls, model: str | None = None, mode: str = "critic", dtype: torch.dtype = torch.float32,
                      attn_implementation: str | None = None, **config_kwargs) -> CriticRewardModel:
        """A fresh reward model on a pretrained causal LM (None: the embedded default backbone)."""
        backbone = from_pretrained(resolve_model_path(model), dtype, attn_implementation)
        config = RewardModelConfig(mode=mode, base_model=model, **config_kwargs)
        return cls(backbone, config)  # the head is float32: it is tiny, and a bf16 head loses the reward's precision

    def add_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.0,
                 target_modules: list[str] | str | None = "all-linear") -> None:
        """Wrap the backbone with a peft LoRA adapter; the reward head stays fully trainable."""
        from peft import LoraConfig, get_peft_model

        if self.is_lora:
            raise RewardModelError("the backbone already has a LoRA adapter")
        lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                          task_type="CAUSAL_LM")
        self.backbone = get_peft_model(self.backbone, lora)
        for parameter in self.reward_head.parameters():
            parameter.requires_grad_(True)

    def save(self, path: str | Path, tokenizer=None, state_dict: dict[str, torch.Tensor] | None = None,
             merge_lora: bool = False) -> Path:
        """Write the model folder (see the module docstring).

        `state_dict` is a full state dict of this module (as gathered by DeepSpeed ZeRO-3 or FSDP on the
        main process); by default the module's own. `merge_lora` writes a LoRA model as full merged weights
        (servable by any engine) instead of an adapter.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        if state_dict is None:
            state_dict = self.state_dict()
        backbone_sd = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        head_sd = {k[len("reward_head."):]: v.detach().contiguous().cpu()
                   for k, v in state_dict.items() if k.startswith("reward_head.")}
        config = RewardModelConfig.from_dict(self.reward_config.to_dict())
        config.dtype = str(self.causal_lm.dtype).removeprefix("torch.")
        if merge_lora and self.is_lora and not any(".base_layer." in k for k in backbone_sd):
            merge_lora = False  # ZeRO-3 gathered only the trainable weights: an adapter is all there is to save
        if self.is_lora and not merge_lora:
            self.backbone.save_pretrained(str(path), state_dict=backbone_sd)  # peft's layout; base in our config
            config.adapter = True
        else:
            if self.is_lora:
                backbone_sd = merged_lora_state_dict(self.backbone, backbone_sd)
            with quiet_hf_progress():
                self.causal_lm.save_pretrained(str(path), state_dict=backbone_sd)
            config.adapter = False
        own = path / CRITICRM_SUBDIR
        own.mkdir(exist_ok=True)
        for stale in (HEAD_FILE, CONFIG_FILE, TEMPLATE_FILE):  # an earlier version's layout, saved over
            (path / stale).unlink(missing_ok=True)
        save_file(head_sd, str(own / HEAD_FILE), metadata={"format": "pt", "criticrm": "reward_head"})
        if config.template and Path(config.template).is_file():  # a user template travels with the model
            if Path(config.template).resolve() != (own / TEMPLATE_FILE).resolve():
                shutil.copyfile(config.template, own / TEMPLATE_FILE)
            config.template = TEMPLATE_FILE
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))
        (own / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        from criticrm.models.card import write_model_card

        write_model_card(path, config)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
             trainable: bool = False, attn_implementation: str | None = None) -> CriticRewardModel:
        """Load a saved reward model.

        `dtype` None keeps the dtype it was saved in (bit-identical rewards); "auto" picks bf16 where the
        device runs it fast, else fp32; or name one (bf16, fp16, fp32). The model is in eval mode unless
        `trainable` (which also keeps a LoRA adapter trainable).
        """
        path = Path(path)
        config = read_config(path)
        device = pick_device(device) if isinstance(device, str) else device
        if dtype is None:
            torch_dtype = getattr(torch, config.dtype) if config.dtype else torch.float32
        elif isinstance(dtype, torch.dtype):
            torch_dtype = dtype
        else:
            torch_dtype = pick_dtype(dtype, device)
        if config.adapter:
            from peft import PeftModel

            base = from_pretrained(resolve_model_path(config.base_model), torch_dtype, attn_implementation)
            backbone = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
        else:
            backbone = from_pretrained(str(path), torch_dtype, attn_implementation)
        if config.template == TEMPLATE_FILE:
            config.template = str(criticrm_dir(path) / TEMPLATE_FILE)
        hidden_size = backbone.config.get_text_config().hidden_size
        head = RewardHead(hidden_size, config.head_hidden_size, config.head_init_std)
        head.load_state_dict(_read_head(path))
        model = cls(backbone, config, head)  # the head stays float32, whatever the backbone's dtype
        model.to(device)
        model.train(trainable)
        if not trainable:
            model.requires_grad_(False)
        return model


@torch.no_grad()
def load_weights_into(model: CriticRewardModel, path: str | Path) -> None:
    """Copy the weights of a saved folder into an existing model of the same shape (resume, best checkpoint).

    Full weights are read tensor by tensor from the safetensors files (no second model in memory); an
    adapter folder loads into the model's own LoRA adapter. Every weight must be found.
    """
    from safetensors import safe_open

    path = Path(path)
    load_reward_head(model, path)
    if (path / "adapter_model.safetensors").is_file():
        if not model.is_lora:
            raise RewardModelError(f"{path} holds a LoRA adapter but the model has none")
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        result = set_peft_model_state_dict(model.backbone, load_file(str(path / "adapter_model.safetensors")))
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise RewardModelError(f"{path}: adapter weights do not match the model ({unexpected[:3]} ...)")
        return
    target = model.causal_lm.state_dict(keep_vars=True)
    if model.is_lora:  # a merged LoRA folder cannot go back into an adapter
        raise RewardModelError(f"{path} holds full weights but the model trains a LoRA adapter")
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    loaded = set()
    for name in files:
        with safe_open(str(path / name), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key in target:
                    target[key].data.copy_(handle.get_tensor(key))
                    loaded.add(key)
    tied = {k for k in target if k not in loaded and any(target[k] is target[o] or
                                                          target[k].data_ptr() == target[o].data_ptr() for o in loaded)}
    missing = sorted(set(target) - loaded - tied)
    if missing:
        raise RewardModelError(f"{path} lacks {len(missing)} weight(s) of the model, e.g. {missing[:3]}")


@torch.no_grad()
def load_reward_head(model: CriticRewardModel, path: str | Path) -> None:
    """Copy the reward head of a saved folder into `model` (resume, or training that continues a saved model)."""
    try:
        model.reward_head.load_state_dict(_read_head(Path(path)))
    except RuntimeError as error:  # torch's message lists every mismatching tensor; the first line says enough
        raise RewardModelError(f"{path}: its reward head does not fit this model's (another head_hidden_size or "
                               f"backbone?): {str(error).splitlines()[0]}") from None


def criticrm_dir(path: str | Path) -> Path:
    """Where a model folder keeps criticrm's own files: `criticrm/`, or the folder itself when it was saved
    by an earlier version (head and config beside the LM)."""
    path = Path(path)
    return path / CRITICRM_SUBDIR if (path / CRITICRM_SUBDIR / CONFIG_FILE).is_file() else path


def read_config(path: Path) -> RewardModelConfig:
    config_path = criticrm_dir(path) / CONFIG_FILE
    if not config_path.is_file():
        raise RewardModelError(f"{path} is not a criticrm reward model folder ({CRITICRM_SUBDIR}/{CONFIG_FILE} "
                               "is missing)")
    raw = json.loads(config_path.read_text())
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise RewardModelError(f"{path} was written by a newer criticrm (format {raw['format_version']}); upgrade criticrm")
    return RewardModelConfig.from_dict(raw)


def is_reward_model_dir(path: str | Path) -> bool:
    own = criticrm_dir(path)
    return (own / CONFIG_FILE).is_file() and (own / HEAD_FILE).is_file()


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token of each row (works for left and right padding)."""
    width = attention_mask.shape[-1]
    index = torch.arange(width, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), index, torch.full_like(index, -1)).amax(-1).clamp_(min=0)


def merged_lora_state_dict(peft_model, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain causal-LM state dict of a LoRA model with the adapter merged in (the model is not changed)."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    merged = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items() if "lora_" not in k}
    inner = peft_model.base_model.model
    for name, module in inner.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    key = f"{name}.base_layer.weight"
                    delta = module.get_delta_weight(adapter).to(merged[key].device, merged[key].dtype)
                    merged[key] = merged[key] + delta
    return {k.replace(".base_layer.", "."): v for k, v in merged.items()}


def _is_peft(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, PeftModel)


def _read_head(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    head_path = criticrm_dir(path) / HEAD_FILE
    if not head_path.is_file():
        raise RewardModelError(f"{path} has no {CRITICRM_SUBDIR}/{HEAD_FILE}: it is a causal LM, not a reward model")
    return load_file(str(head_path))

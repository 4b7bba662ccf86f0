"""Export a standard-mode reward model as the folder every scalar-RM consumer loads: a sequence classifier.

TRL, OpenRLHF and RewardBench load a scalar reward model as `AutoModelForSequenceClassification`: the
decoder under its `base_model_prefix` and a `score` layer, `nn.Linear(hidden, 1, bias=False)`, read at
the last token that is not padding (transformers' `GenericForSequenceClassification`, and OpenRLHF's
`_get_reward_model` in openrlhf/models/model.py, which reads at the last attended token). A standard-mode
criticrm model is exactly that shape, with two differences this export settles:

- Its head has a bias, which a `score` layer has no place for. The exported score is the criticrm reward
  minus that constant (a constant changes no preference, no Bradley-Terry probability and no group-
  normalised advantage); `config.criticrm_reward_bias` keeps it, and OpenRLHF's normalisation statistics
  `config.mean` / `config.std` (read by `_get_reward_model`) are those of the exported score, so OpenRLHF's
  `--reward.normalize_enable` gives criticrm's `--normalize` reward exactly.
- The classifier finds its read position by searching for the last token that is not `pad_token_id`; for
  SmolLM2 the pad token is `<|im_end|>`, the very token the reward is read at. The export picks a pad token
  that differs from it and sets it in both the config and the tokenizer.

A critic-mode model cannot be exported so: its reward is read after a critique it writes itself.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from criticrm.errors import CriticRMError
from criticrm.models.critic_rm import CriticRewardModel

FORMATS = ("sequence-classification",)


class ExportError(CriticRMError):
    """The model cannot be written in the asked format; the message says why."""


@torch.no_grad()
def export_sequence_classification(model_dir: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Write `model_dir` (a standard-mode criticrm folder) as an AutoModelForSequenceClassification folder."""
    from transformers import AutoModelForSequenceClassification

    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.card import write_export_card

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise ExportError(f"{out_dir}: the export must go to another folder than the model it exports")
    model = CriticRewardModel.load(model_dir, device="cpu", dtype=dtype)
    config = model.reward_config
    if config.mode != "standard":
        raise ExportError(f"{model_dir} is a {config.mode}-mode model: its reward is read after a critique it "
                          "writes itself, which a sequence classifier cannot do; export a standard-mode model")
    head = model.reward_head.net
    if not isinstance(head, torch.nn.Linear):
        raise ExportError(f"{model_dir} has a {config.head_hidden_size}-unit MLP reward head; a `score` layer is "
                          "one linear layer (train with head_hidden_size 0 to export)")
    lm = model.backbone.merge_and_unload() if model.is_lora else model.causal_lm
    tokenizer = load_tokenizer(str(model_dir))
    read_token = model.sequence_builder(tokenizer).closing_token_id([{"role": "user", "content": "?"}])
    pad_id = _pad_token_id(tokenizer, read_token)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)

    bias = float(head.bias)
    classifier_config = copy.deepcopy(lm.config)
    classifier_config.num_labels = 1
    classifier_config.architectures = None  # save_pretrained records the classifier's own
    classifier_config.pad_token_id = pad_id
    classifier_config.get_text_config().pad_token_id = pad_id
    classifier_config.criticrm_reward_bias = bias
    if model.has_reward_stats():  # the exported score's statistics: criticrm's, less the bias
        classifier_config.mean, classifier_config.std = config.reward_mean - bias, config.reward_std
    classifier = AutoModelForSequenceClassification.from_config(classifier_config, dtype=lm.dtype)
    decoder = getattr(lm, lm.base_model_prefix).state_dict()
    getattr(classifier, classifier.base_model_prefix).load_state_dict(decoder)
    classifier.score.weight.copy_(head.weight.to(classifier.score.weight.dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    classifier.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    write_export_card(out_dir, config, pad_token=tokenizer.pad_token,
                      read_token=tokenizer.convert_ids_to_tokens(read_token), bias=bias)
    return out_dir


def _pad_token_id(tokenizer, read_token: int) -> int:
    """The tokenizer's pad token when it is not the token the reward is read at, else another special token."""
    candidates = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
                  *sorted(tokenizer.all_special_ids)]
    for candidate in candidates:
        if candidate is not None and candidate != read_token:
            return candidate
    raise ExportError("the tokenizer has no special token other than the one the reward is read at, so no pad "
                      "token can tell padding from the read position")

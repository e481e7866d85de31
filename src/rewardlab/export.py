"""Export a rewardlab reward model as a plain `AutoModelForSequenceClassification` checkpoint (num_labels = 1).

That is the format TRL, OpenRLHF and RewardBench consume. The decoder weights are copied (LoRA merged first) and the linear
reward head becomes the classifier's `score` layer (a bias-free Linear(hidden, 1), like rewardlab's `linear` head), so the
exported model gives the same rewards.

Limits, stated plainly:
- The `mlp` head (GRM's Linear -> ReLU -> Linear) has no place in `*ForSequenceClassification`, whose head is one linear
  layer: export refuses it rather than write a model that scores differently. Train with `--head linear` to export.
- Ensembles have no single-model equivalent; export a member instead.
- transformers' classifier reads the reward at the last token that is not `pad_token_id`. When pad == eos and a sequence
  ends in EOS, it reads one token early (TRL #3750). rewardlab reads by the attention mask; the export warns in that case.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from rewardlab.modeling.ensemble import EnsembleRewardModel
from rewardlab.modeling.reward_model import load_reward_model


class ExportError(ValueError):
    pass


def export_sequence_classifier(model_dir: str | Path, output_dir: str | Path) -> dict:
    """Write the checkpoint and check it against rewardlab's scores. Returns a report (max_abs_diff, warnings)."""
    rm = load_reward_model(model_dir)
    if isinstance(rm, EnsembleRewardModel):
        raise ExportError(f"{model_dir}: an ensemble cannot be exported as one classifier; export one of its members")
    if rm.config.head != "linear":
        raise ExportError(
            f"{model_dir}: the '{rm.config.head}' reward head cannot be represented by AutoModelForSequenceClassification "
            "(its score layer is a single bias-free linear layer); train with --head linear to export"
        )
    causal_lm = rm.lm.merge_and_unload() if rm.uses_lora else rm.causal_lm
    config = type(causal_lm.config).from_dict(causal_lm.config.to_dict())
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.pad_token_id = rm.tokenizer.pad_token_id
    config.architectures = None
    classifier = AutoModelForSequenceClassification.from_config(config)
    body = getattr(classifier, classifier.base_model_prefix)
    missing, unexpected = body.load_state_dict(causal_lm.get_decoder().state_dict(), strict=False)
    if missing or unexpected:
        raise ExportError(f"decoder weights do not fit the classifier: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        classifier.score.weight.copy_(rm.head.net.weight.to(classifier.score.weight.dtype))
    classifier.config.architectures = [type(classifier).__name__]
    output_dir = Path(output_dir)
    classifier.save_pretrained(output_dir)
    rm.tokenizer.save_pretrained(output_dir)

    warnings = []
    tok = rm.tokenizer
    if tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id:
        warnings.append(
            "pad_token == eos_token: transformers' classifier reads the reward one token before a trailing EOS; "
            "set a distinct pad token for exact agreement"
        )
    max_diff = _agreement(rm, output_dir)
    return {
        "output_dir": str(output_dir),
        "architecture": type(classifier).__name__,
        "max_abs_diff": max_diff,
        "warnings": warnings,
    }


@torch.no_grad()
def _agreement(rm, output_dir: Path) -> float:
    """Max |reward difference| between rewardlab and the reloaded classifier on a few probe texts (right padded)."""
    from rewardlab.data.templates import encode_prompt_response, pad_sequences

    classifier = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    probes = [
        ("How are you?", "Fine, thanks."),
        ([{"role": "user", "content": "reverse: abc"}], "cba"),
        ("A longer prompt to make the batch ragged, with some more words in it.", "Short."),
    ]
    seqs = []
    for prompt, response in probes:
        try:
            seqs.append(encode_prompt_response(rm.tokenizer, prompt, response))
        except ValueError:
            continue
    ids, mask, _ = pad_sequences(seqs, rm.tokenizer.pad_token_id)
    ours = rm(ids, mask).sequence_rewards.float()
    theirs = classifier(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()
    return (ours - theirs).abs().max().item()

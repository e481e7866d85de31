"""Export a rewardlab reward model as a plain `AutoModelForSequenceClassification` checkpoint (num_labels = 1).

That is the format TRL, OpenRLHF and RewardBench consume. The decoder weights are copied (LoRA merged first) and the linear
reward head becomes the classifier's `score` layer (a bias-free Linear(hidden, 1), like rewardlab's `linear` head), so the
exported model gives the same rewards.

The pad token. transformers' classifier reads the score at the rightmost token that is not `pad_token_id`, from the input
ids (the attention mask is not consulted). rewardlab reads it at the last real token by the attention mask. The two agree
only if the pad token never is the token a reward is read at. Many tokenizers pad with EOS (SmolLM2, Llama, Mistral), and
plain-string data ends in EOS: the classifier would read one token early. So when the pad token is missing, equals EOS, or
ends any probe text, the export gives the classifier a pad token of its own (`<|pad|>`, one embedding row added, never
attended to) in its config and tokenizer. The checkpoint is then checked against rewardlab on chat-template and plain-string
text, right and left padded; above `TOLERANCE` the export fails and leaves nothing behind (it is written to a temporary
directory that replaces the output only after the check). The source's `text_convention.json` goes with it (`rewardlab doctor`
compares a tokenizer's encodings with it).

Text conventions (what a user of the exported model must feed it to get rewardlab's scores):
- chat data: the tokenizer's chat template over prompt + response messages (`apply_chat_template(..., tokenize=False)`,
  tokenised without adding special tokens again);
- plain strings: `prompt + response + EOS`: the joined string `prompt + response` tokenised as one text with the
  tokenizer's usual special tokens, then the EOS token (as `tokenizer(prompt + response + eos_token)` gives it).
TRL's GRPOTrainer scores plain strings as `prompt + completion` WITHOUT EOS, so its scores differ from rewardlab's for the
same text (chat data matches): use `rewardlab.integrations.trl.reward_function` there, or append EOS yourself.

Reward normalisation (`export --normalize`; rewardlab's r' = (r - mean) / std, `rewardlab.modeling.normalization`).
transformers' `score` layer is a bias-free Linear(hidden, 1) (`GenericForSequenceClassification`, Llama, Qwen2, Mistral...)
and reads the decoder's final RMS-normalised hidden state, which has no constant component a weight could turn into a bias:
the scale can be baked into the head, the mean cannot. So the exported `score.weight` is weight / std and the classifier's
logits are r / std = r' + mean / std: normalised up to one constant, `offset = mean / std`, recorded in config.json as
`rewardlab_normalization.offset`. Comparisons (RewardBench, best-of-N) and group-centred advantages (GRPO, RLOO) are
unaffected by it; subtract it for the absolute values. OpenRLHF's `normalize_reward` (which reads `mean` and `std` from
config.json and returns (logit - mean) / std) gives exactly r': whenever the model has recorded statistics, the export
writes them there (mean / std and 1 with --normalize, mean and std without), so OpenRLHF's flag is never a silent no-op.
The self-check compares logits - offset with rewardlab's normalised rewards.

Limits: the `mlp` head has no place in `*ForSequenceClassification` (one linear layer): export refuses it. Ensembles have
no single-model equivalent: export a member.
"""

from __future__ import annotations

import copy
import json
import math
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from rewardlab.data.templates import TEXT_RECORD_NAME, encode_prompt_response, pad_sequences, text_record
from rewardlab.errors import UserError
from rewardlab.modeling.loader import load_reward_model, resolve_model_dir
from rewardlab.modeling.normalization import RewardStatistics
from rewardlab.modeling.sources import is_builtin
from rewardlab.runtime import atomic_directory, check_output_dir, resolve_device, write_json

TOLERANCE = 1e-4
EXPORT_PAD = "<|pad|>"

# Probe texts for the self-check: chat pairs (rendered by the template when the tokenizer has one) and plain strings,
# ragged lengths, an empty answer, odd whitespace and non-ASCII text.
CHAT_PROBES = [
    ([{"role": "user", "content": "How are you?"}], [{"role": "assistant", "content": "Fine, thanks."}]),
    ([{"role": "user", "content": "reverse: abc"}], [{"role": "assistant", "content": "cba"}]),
    (
        [{"role": "user", "content": "A longer question, so that the batch is ragged: why is the sky blue?"}],
        [{"role": "assistant", "content": "Rayleigh scattering  \n favours short wavelengths. ☀️"}],
    ),
    ([{"role": "user", "content": "Say nothing."}], [{"role": "assistant", "content": ""}]),
]
PLAIN_PROBES = [
    ("How are you?", " Fine, thanks."),
    ("A longer prompt to make the batch ragged, with some more words in it.", " Short."),
    ("Empty answer:", ""),
    ("Café crème, s'il vous plaît.", " Voilà — très bien !"),
]


class ExportError(UserError):
    """The checkpoint cannot be exported exactly (shown as one line)."""


def export_sequence_classifier(
    model_dir: str | Path,
    output_dir: str | Path,
    device: str | None = None,
    overwrite: bool = False,
    normalize: bool = False,
) -> dict:
    """Write the checkpoint and check it against rewardlab's scores (fp32). Returns a report (max_abs_diff per text kind,
    the pad token used, the normalisation offset). Raises ExportError, leaving no output, when it cannot be exact.

    `output_dir` must not exist, be empty, or (with `overwrite`) hold an earlier rewardlab export; it must lie apart from
    `model_dir`. Checked before the model loads; anything else there is refused (UserError) and left as it is.

    `normalize`: bake the recorded reward normalisation into the head as far as a bias-free layer allows (the module
    docstring): logits = normalised reward + `offset`."""
    output_dir = check_output_dir(output_dir, overwrite=overwrite, inputs=[model_dir], flag="--output")
    device = resolve_device(device)
    rm = load_reward_model(model_dir, device=device, dtype=torch.float32, normalize=normalize)
    if rm.primary() is not rm:
        raise ExportError(f"{model_dir}: an ensemble cannot be exported as one classifier; export one of its members")
    try:
        score_weight = rm.head.linear_weight()
    except ValueError as err:
        raise ExportError(f"{model_dir}: {err}") from None
    stats = rm.config.reward_statistics
    offset = normalization_offset(stats) if normalize else 0.0
    probes = _encoded_probes(rm.tokenizer)
    tokenizer = _export_tokenizer(rm.tokenizer, read_at={ids[-1] for kind in probes.values() for ids in kind})
    classifier = _classifier(rm, tokenizer, score_weight / stats.std if normalize else score_weight)
    if stats is not None:
        record_statistics(classifier.config, stats, normalize)

    agreement = partial(_agreement, rm, probes, device=device, offset=offset)
    differences, worst = _write_checked(classifier, tokenizer, model_dir, rm, output_dir, overwrite, agreement)
    return {
        "output_dir": str(output_dir),
        "architecture": type(classifier).__name__,
        "pad_token": tokenizer.pad_token,
        "pad_token_added": tokenizer.pad_token != rm.tokenizer.pad_token,
        "max_abs_diff": worst,
        "max_abs_diff_by_text": differences,
        "normalize": normalize,
        "offset": offset if normalize else None,
    }


def _write_checked(
    classifier, tokenizer, model_dir: str | Path, rm, output_dir: Path, overwrite: bool, agreement
) -> tuple[dict[str, float], float]:
    """Write the checkpoint into a temporary directory, measure `agreement(checkpoint)` (text kind -> max |difference|
    with rewardlab) on the reloaded files, and move it to `output_dir` only within TOLERANCE (ExportError otherwise,
    nothing written). Returns the differences and the worst."""
    with atomic_directory(output_dir, replace=overwrite) as tmp:
        classifier.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / TEXT_RECORD_NAME, _text_record(model_dir, rm.tokenizer))
        differences = agreement(tmp)
        worst = max(differences.values(), key=lambda d: math.inf if math.isnan(d) else d)
        if not worst <= TOLERANCE:  # also catches NaN
            raise ExportError(
                f"the exported {type(classifier).__name__} disagrees with rewardlab by {worst:.2e} (> {TOLERANCE:g}; "
                + ", ".join(f"{k} {v:.2e}" for k, v in differences.items())
                + f"); nothing written to {output_dir}"
            )
    return differences, worst


def normalization_offset(stats: RewardStatistics) -> float:
    """What a normalised export's logits exceed the normalised reward by: the mean a bias-free head cannot subtract,
    in the scaled units (mean / std)."""
    return stats.mean / stats.std


def record_statistics(config, stats: RewardStatistics, normalized_head: bool) -> None:
    """config.json entries: OpenRLHF's `mean` / `std` (its normalize_reward computes (logit - mean) / std), in the units
    of the exported head's logits, and rewardlab's own record (the raw statistics, whether the head is scaled, the offset)."""
    if normalized_head:
        config.mean, config.std = normalization_offset(stats), 1.0
    else:
        config.mean, config.std = stats.mean, stats.std
    config.rewardlab_normalization = stats.to_dict() | {
        "normalized_head": normalized_head,
        "offset": normalization_offset(stats) if normalized_head else None,
    }


def _text_record(model_dir: str | Path, tokenizer) -> dict:
    """The source checkpoint's record of its text convention (what training saw), else this tokenizer's."""
    if not is_builtin(str(model_dir)):
        saved = resolve_model_dir(model_dir) / TEXT_RECORD_NAME
        if saved.exists():
            return json.loads(saved.read_text())
    return text_record(tokenizer)


def _encoded_probes(tokenizer) -> dict[str, list[list[int]]]:
    """Token ids of the probe texts as rewardlab encodes them (chat probes only when the tokenizer has a template)."""
    kinds = {"plain strings": PLAIN_PROBES}
    if getattr(tokenizer, "chat_template", None):
        kinds = {"chat template": CHAT_PROBES, **kinds}
    return {kind: [encode_prompt_response(tokenizer, p, r).input_ids for p, r in pairs] for kind, pairs in kinds.items()}


def _export_tokenizer(tokenizer, read_at: set[int]):
    """A copy of the tokenizer whose pad token is never a token a reward is read at (see the module docstring)."""
    exported = copy.deepcopy(tokenizer)
    pad = exported.pad_token_id
    if pad is None or pad == exported.eos_token_id or pad in read_at:
        exported.add_special_tokens({"pad_token": EXPORT_PAD})
    return exported


def _classifier(rm, tokenizer, score_weight: torch.Tensor):
    """An AutoModelForSequenceClassification with rewardlab's decoder weights and the linear head as `score`."""
    classifier = _with_decoder(rm, AutoModelForSequenceClassification, {0: "reward"})
    with torch.no_grad():
        classifier.score.weight.copy_(score_weight.to(classifier.score.weight.dtype))
    return _with_tokenizer(classifier, tokenizer)


def _with_decoder(rm, auto_class, labels: dict[int, str]):
    """A fresh `auto_class` model of the reward model's architecture holding its decoder weights (LoRA merged)."""
    causal_lm = rm.lm.merge_and_unload() if rm.uses_lora else rm.causal_lm
    config = type(causal_lm.config).from_dict(causal_lm.config.to_dict())
    config.num_labels = len(labels)
    config.id2label, config.label2id = labels, {name: i for i, name in labels.items()}
    config.architectures = None
    classifier = auto_class.from_config(config)
    body = getattr(classifier, classifier.base_model_prefix)
    missing, unexpected = body.load_state_dict(causal_lm.get_decoder().state_dict(), strict=False)
    if missing or unexpected:
        raise ExportError(f"decoder weights do not fit the classifier: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return classifier


def _with_tokenizer(classifier, tokenizer):
    """The classifier's embeddings and config made to fit the exported tokenizer (an added pad token)."""
    if len(tokenizer) > classifier.get_input_embeddings().num_embeddings:
        # the added pad token's row is never attended to (padding is masked); its value does not matter
        classifier.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    classifier.config.architectures = [type(classifier).__name__]
    return classifier


@torch.no_grad()
def _agreement(rm, probes: dict[str, list[list[int]]], checkpoint: Path, device, offset: float = 0.0) -> dict[str, float]:
    """Max |reward difference| between rewardlab (normalised when `rm` normalises) and the reloaded checkpoint's logits
    minus `offset`, per kind of text, right and left padded."""

    def gap(ours, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (ours.sequence_rewards.float() - (logits[:, 0].float() - offset)).abs().max()

    return _max_gaps(rm, probes, checkpoint, device, AutoModelForSequenceClassification, gap)


def _max_gaps(rm, probes: dict[str, list[list[int]]], checkpoint: Path, device, auto_class, gap) -> dict[str, float]:
    """Per kind of probe text, the largest `gap(rewardlab's output, the reloaded checkpoint's logits, attention mask)`
    over right- and left-padded batches. Each side pads with its own tokenizer's pad token, as its users would."""
    from rewardlab.data.templates import EncodedSequence

    classifier = auto_class.from_pretrained(checkpoint).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    differences = {}
    for kind, sequences in probes.items():
        encoded = [EncodedSequence(ids, 0) for ids in sequences]
        gaps = []
        for side in ("right", "left"):
            ids, mask, _ = pad_sequences(encoded, rm.tokenizer.pad_token_id, side)
            theirs_ids, theirs_mask, _ = pad_sequences(encoded, tokenizer.pad_token_id, side)
            ours = rm(ids.to(device), mask.to(device))
            logits = classifier(input_ids=theirs_ids.to(device), attention_mask=theirs_mask.to(device)).logits
            gaps.append(gap(ours, logits, mask.to(device)))
        differences[kind] = torch.stack(gaps).max().item()  # NaN propagates
    return differences


# ----------------------------------------------------------------------------------------------------------------------
# process reward models: AutoModelForTokenClassification, the class TRL's PRM trainer trains
#
# TRL's PRMTrainer trains a two-class token classifier and reads P(step correct) = softmax(logits)[..., 1] at each step's
# separator token. rewardlab's PRM has one logit s per token (the reward head) with P(correct) = sigmoid(s). The export
# writes `score` as Linear(hidden, 2) with row 0 (wrong) zero and row 1 (correct) the head, biases 0: logits = (0, s), so
# softmax(logits)[..., 1] = sigmoid(s) and logits[..., 1] - logits[..., 0] = s at every token, exactly.

PRM_LABELS = {0: "wrong", 1: "correct"}


def export_token_classifier(
    model_dir: str | Path, output_dir: str | Path, device: str | None = None, overwrite: bool = False
) -> dict:
    """Write a process reward model as AutoModelForTokenClassification (num_labels 2) and check it against rewardlab's
    position rewards at every real token of the probe texts (fp32, right and left padded). Raises ExportError, leaving
    no output, when it cannot be exact. `output_dir` as for `export_sequence_classifier`."""
    output_dir = check_output_dir(output_dir, overwrite=overwrite, inputs=[model_dir], flag="--output")
    device = resolve_device(device)
    rm = load_reward_model(model_dir, device=device, dtype=torch.float32)
    if rm.primary() is not rm:
        raise ExportError(f"{model_dir}: an ensemble cannot be exported as one classifier; export one of its members")
    try:
        head_weight = rm.head.linear_weight()
    except ValueError as err:
        raise ExportError(f"{model_dir}: {err}") from None
    classifier = _with_decoder(rm, AutoModelForTokenClassification, PRM_LABELS)
    with torch.no_grad():
        classifier.score.weight.zero_()
        classifier.score.weight[1].copy_(head_weight.reshape(-1).to(classifier.score.weight.dtype))
        if classifier.score.bias is not None:
            classifier.score.bias.zero_()
    tokenizer = copy.deepcopy(rm.tokenizer)
    if tokenizer.pad_token_id is None:  # a token classifier reads every position: any pad token does, but one is needed
        tokenizer.add_special_tokens({"pad_token": EXPORT_PAD})
    classifier = _with_tokenizer(classifier, tokenizer)
    probes = _encoded_probes(rm.tokenizer)
    agreement = partial(_token_agreement, rm, probes, device=device)
    differences, worst = _write_checked(classifier, tokenizer, model_dir, rm, output_dir, overwrite, agreement)
    return {
        "output_dir": str(output_dir),
        "architecture": type(classifier).__name__,
        "labels": PRM_LABELS,
        "max_abs_diff": worst,
        "max_abs_diff_by_text": differences,
    }


@torch.no_grad()
def _token_agreement(rm, probes: dict[str, list[list[int]]], checkpoint: Path, device) -> dict[str, float]:
    """Max |rewardlab's position reward - (logit correct - logit wrong)| over every real token, per kind of text, right
    and left padded."""

    def gap(ours, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return (ours.position_rewards.float() - (logits[..., 1] - logits[..., 0]))[mask.bool()].abs().max()

    return _max_gaps(rm, probes, checkpoint, device, AutoModelForTokenClassification, gap)

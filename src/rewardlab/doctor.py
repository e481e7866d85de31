"""`rewardlab doctor`: contract checks for a reward checkpoint, rewardlab's own or a plain transformers
`*ForSequenceClassification` with one label (TRL's RewardTrainer, OpenRLHF, `rewardlab export`).

Every check is a small function returning one `Check` row (name, passed | failed | skipped | info, the measured figure,
the tolerance, a sentence). The texts are the export's probes (chat-template and plain-string pairs, ragged, an empty
answer, non-ASCII), encoded as rewardlab encodes training data (`encode_prompt_response`), and with `--data` the pairs of a
preference file. The reference for "where the reward is read" is rewardlab's convention: the score head's value at the
last real token of the encoded text (the attention mask says which tokens are real), i.e. at the template's closing for
chat and at the EOS rewardlab appends to plain strings.

- `head`: the head was loaded and is not at its initialisation. A head missing from a transformers checkpoint (transformers
  draws it at load, trl#1379) fails outright, as does a non-finite or all-zero head, or a rewardlab head equal to the draw
  its run's seed gives. Then the alignment test: the variance of the scores over the texts divided by what a random head
  direction of the same norm gives on the same features (1 on average for a random direction), against 2,000 random
  directions. A head trained together with its backbone (full fine-tuning, LoRA) sits far above them: the backbone learns
  to vary along the head (tiny models trained 6 steps: 12-27 against a 99th percentile of 3-5). A head drawn afresh, lost
  and re-initialised, or swapped in after training is a random direction to the backbone, and lands in their bulk. It
  passes above the 99th percentile (a random head passes by chance 1 time in 100). A frozen-backbone run (its run config
  says so) trains the head alone, so alignment says nothing: there only the distance from the seed's draw counts.
- `pad_eos`: the score the model returns equals the head at the last real token, each text alone and right-padded in a
  ragged batch with the tokenizer's pad token. A classifier whose `pad_token_id` is EOS reads one token early on text
  that ends in EOS (trl#937, reward-bench#115); one whose pad id is not the tokenizer's reads a pad token.
- `text_convention`: the tokenizer encodes the two texts recorded when the checkpoint was saved (`text_convention.json`,
  written by rewardlab's save and export) to the same ids: an edited chat template or EOS changes where the reward is read.
- `chat_closing`: the template closes an assistant turn with an end-of-turn special token (EOS, or another special token
  such as Llama 3's <|eot_id|>), so the reward is read at or after the token a policy stops at. A template cut before its
  closing reads the reward at the answer's last content token.
- `closing_after_eos` (info): what the template writes after EOS (ChatML: "\\n") and how much the reward moves when a
  generation that stops at EOS is scored without it (rewardlab serve, ppo and verl close the turn; other tools do not).
- `padding_sides`: right- and left-padded batches give the same scores. `packed` (rewardlab models): padding-free and
  padded forwards agree.
- `export`: a rewardlab model exported to a temporary directory and scored by plain transformers gives the same scores.
  `server`: the same texts through `rewardlab.serve`'s app in-process (`/score` with prompt and response, `/get_reward`
  with the rendered text) give the same scores.
- `bf16`: the model cast to bf16 gives scores within 10% of the fp32 scores' std over the texts plus 2^-7 of the largest
  |score| (two bf16 units in the last place: the score's own rounding); run last, it casts the model.
- With data (info rows): `length_baseline` (pairwise accuracy of "the longer response wins", response tokens, ties one
  half) beside the model's own accuracy; `reward_length_correlation` (Pearson and Spearman over every response).

Tolerances: equalities to 1e-4 times max(1, |score|) (the export's tolerance, fp32); bf16 as above.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rewardlab.config import EvalBatchingSpec
from rewardlab.data.templates import (
    TEXT_RECORD_NAME,
    EncodedSequence,
    assistant_turn_text,
    closing_ids_after_eos,
    encode_prompt_response,
)
from rewardlab.data.types import Text
from rewardlab.errors import MissingPathError, UserError, reading_user_input
from rewardlab.export import CHAT_PROBES, PLAIN_PROBES
from rewardlab.losses import pairwise_accuracy
from rewardlab.masks import last_token_index, pad_rows

PASSED, FAILED, SKIPPED, INFO = "passed", "failed", "skipped", "info"
EXACT = 1e-4  # |a - b| <= EXACT * max(1, |a|): the export's tolerance
BF16_SPREAD_SHARE = 0.1  # |bf16 - fp32| <= 10% of the fp32 scores' std + 2^-7 x max |score| (`bf16_tolerance`)
RANDOM_DIRECTIONS = 2000
ALIGNMENT_QUANTILE = 0.99
SEED_DISTANCE = 1e-3  # a head closer than this (relative) to its seed's draw has not trained
DATA_LIMIT = 256  # pairs read from --data by default


@dataclass
class Check:
    name: str
    status: str  # passed | failed | skipped | info
    figure: float | None
    tolerance: str
    detail: str
    extra: dict = field(default_factory=dict)
    seconds: float | None = None  # wall time of the check

    def to_row(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------------
# pure pieces


def within(a: torch.Tensor, b: torch.Tensor, tolerance: float = EXACT) -> tuple[float, bool]:
    """(max |a - b|, whether every |a - b| <= tolerance * max(1, |a|)); NaN anywhere fails."""
    a, b = a.double().cpu(), b.double().cpu()
    gap = (a - b).abs()
    worst = gap.max().item() if gap.numel() else 0.0
    ok = bool(torch.all(gap <= tolerance * a.abs().clamp(min=1.0))) and not math.isnan(worst)
    return worst, ok


def alignment_ratio(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Variance of features @ w over rows, divided by |w|^2 / d times the features' total variance: E = 1 for a direction
    drawn isotropically. features (N, d), weight (K, d) -> (K,) ratios."""
    centred = features.double() - features.double().mean(0)
    weight = weight.double()
    total = centred.square().sum()
    if total == 0:
        return torch.full((weight.shape[0],), float("nan"), dtype=torch.float64)
    along = (centred @ weight.T).square().sum(0)  # (K,)
    return along * features.shape[1] / (weight.square().sum(1) * total)


def random_alignment(features: torch.Tensor, n: int = RANDOM_DIRECTIONS, seed: int = 0) -> torch.Tensor:
    """`alignment_ratio` of n isotropic random directions on the same features (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(n, features.shape[1], generator=generator, dtype=torch.float64)
    return alignment_ratio(features, directions)


def length_accuracy(chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor) -> float:
    """Pairwise accuracy of the length-only baseline: the longer response wins, a tie counts one half."""
    return pairwise_accuracy(chosen_lengths.double(), rejected_lengths.double(), torch.float64).item()


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    from rewardlab.diagnose import pearson as _pearson

    return _pearson(x, y)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    from rewardlab.diagnose import spearman as _spearman

    return _spearman(x, y)


# ----------------------------------------------------------------------------------------------------------------------
# the checkpoint, either kind


@dataclass
class Reading:
    """A batch's scores as the model returns them, the head's value at each row's last real token, and the features the
    head's output layer reads there."""

    returned: torch.Tensor  # (B,)
    at_last: torch.Tensor  # (B,)
    features: torch.Tensor  # (B, F)


class Subject:
    """A loaded reward checkpoint: a rewardlab RewardModel or a transformers sequence classifier with one label."""

    def __init__(
        self, kind: str, model, tokenizer, source: str, missing_head: Sequence[str] = (), run_config: dict | None = None
    ):
        self.kind = kind  # "rewardlab" | "transformers"
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.missing_head = list(missing_head)
        self.run_config = run_config or {}

    @property
    def pad_id(self) -> int:
        """The tokenizer's pad token (what its users pad with), else the classifier's configured one, else 0."""
        pad = self.tokenizer.pad_token_id
        if pad is None and self.kind == "transformers":
            pad = self.model.config.pad_token_id
        return pad if pad is not None else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def output_layer(self) -> torch.nn.Linear:
        """The layer whose single output is the score."""
        if self.kind == "rewardlab":
            net = self.model.head.net
            return net if isinstance(net, torch.nn.Linear) else net[-1]
        return self.model.score

    def record_dir(self) -> Path | None:
        return Path(self.source) if Path(self.source).is_dir() else None

    @torch.no_grad()
    def read(self, rows: Sequence[Sequence[int]], side: str = "right", packed: bool = False) -> Reading:
        """Score token-id rows as one batch padded on `side` with the tokenizer's pad token."""
        ids, mask = pad_rows(rows, self.pad_id, side)
        ids, mask = ids.to(self.device), mask.to(self.device)
        captured: dict[str, torch.Tensor] = {}

        def hook(module, inputs, output):
            captured["features"], captured["values"] = inputs[0], output

        handle = None if packed else self.output_layer().register_forward_hook(hook)
        try:
            if self.kind == "rewardlab":
                out = self.model(ids, mask, packed=packed)
                returned = out.sequence_rewards
            else:
                returned = self.model(input_ids=ids, attention_mask=mask).logits[:, 0]
        finally:
            if handle is not None:
                handle.remove()
        if packed:
            return Reading(returned.float().cpu(), out.sequence_rewards.float().cpu(), torch.empty(0))
        last = last_token_index(mask)
        rows_index = torch.arange(ids.shape[0], device=ids.device)
        values = captured["values"].reshape(ids.shape[0], ids.shape[1], -1)[..., 0]
        features = captured["features"].reshape(ids.shape[0], ids.shape[1], -1)
        return Reading(returned.float().cpu(), values[rows_index, last].float().cpu(), features[rows_index, last].double().cpu())

    def read_in_batches(self, rows: Sequence[Sequence[int]], batch_size: int) -> Reading:
        """`read` over length-sorted batches; results in input order."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        parts: list[tuple[list[int], Reading]] = []
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            parts.append((chunk, self.read([rows[i] for i in chunk])))
        inverse = torch.empty(len(rows), dtype=torch.long)
        inverse[torch.tensor([i for chunk, _ in parts for i in chunk])] = torch.arange(len(rows))
        return Reading(
            torch.cat([r.returned for _, r in parts])[inverse],
            torch.cat([r.at_last for _, r in parts])[inverse],
            torch.cat([r.features for _, r in parts])[inverse],
        )


def _run_config(model_dir: Path) -> dict:
    """The training run's config.json beside a run's model/ directory (seed, freeze_backbone), when there is one."""
    for candidate in (model_dir.parent / "config.json", model_dir / "config.json"):
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "seed" in data and data.get("command", "train-rm") == "train-rm":
            return data
    return {}


def load_subject(model: str, device: str | torch.device | None = None) -> Subject:
    """Load `model` in fp32: a rewardlab reward model (directory, run directory, built-in name) or a transformers
    `*ForSequenceClassification` directory with one label."""
    from rewardlab.modeling.loader import load_reward_model, resolve_model_dir
    from rewardlab.modeling.reward_model import CONFIG_NAME
    from rewardlab.modeling.sources import is_builtin
    from rewardlab.runtime import resolve_device

    device = resolve_device(device)
    path = Path(model)
    rewardlab_dir = None
    if not is_builtin(model):
        with contextlib.suppress(FileNotFoundError):
            rewardlab_dir = resolve_model_dir(path)
    if is_builtin(model) or rewardlab_dir is not None:
        rm = load_reward_model(model, device=device, dtype=torch.float32)
        if rm.primary() is not rm:
            raise UserError(f"{model}: an ensemble; run doctor on one of its members (member-0, ...)")
        source = str(rewardlab_dir) if rewardlab_dir is not None else model
        run = _run_config(rewardlab_dir) if rewardlab_dir is not None else {}
        return Subject("rewardlab", rm, rm.tokenizer, source, run_config=run)
    if not (path / "config.json").exists():
        raise MissingPathError(
            f"{model}: neither a rewardlab reward model ({CONFIG_NAME}) nor a transformers checkpoint (config.json)"
        )
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    with reading_user_input(OSError, ValueError):  # transformers on a checkpoint it cannot read: "Unrecognized model..."
        config = AutoConfig.from_pretrained(path)
    if not any(name.endswith("ForSequenceClassification") for name in (config.architectures or [])):
        raise UserError(f"{model}: {config.architectures} is not a *ForSequenceClassification reward model")
    if config.num_labels != 1:
        raise UserError(f"{model}: a classifier with {config.num_labels} labels; a reward model has one")
    with reading_user_input(OSError, ValueError):
        classifier, info = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    if not isinstance(getattr(classifier, "score", None), torch.nn.Linear):
        raise UserError(f"{model}: {type(classifier).__name__} has no `score` layer (a decoder reward model's head)")
    missing = [key for key in info.get("missing_keys", []) if key.split(".")[0] == "score" or ".score." in f".{key}"]
    with reading_user_input(OSError, ValueError):
        tokenizer = AutoTokenizer.from_pretrained(path)
    return Subject("transformers", classifier.to(device).eval(), tokenizer, str(path), missing_head=missing)


# ----------------------------------------------------------------------------------------------------------------------
# texts


@dataclass
class Texts:
    """(prompt, response) pairs and their encodings as rewardlab encodes training data."""

    pairs: list[tuple[Text, Text]]
    encoded: list[EncodedSequence]

    @property
    def rows(self) -> list[list[int]]:
        return [e.input_ids for e in self.encoded]


def probe_texts(tokenizer) -> Texts:
    """The export's probes: chat pairs (when the tokenizer has a chat template) and plain strings."""
    pairs: list[tuple[Text, Text]] = list(PLAIN_PROBES)
    if getattr(tokenizer, "chat_template", None):
        pairs = list(CHAT_PROBES) + pairs
    return Texts(pairs, [encode_prompt_response(tokenizer, p, r) for p, r in pairs])


# ----------------------------------------------------------------------------------------------------------------------
# checks


def check_head(subject: Subject, features: torch.Tensor) -> Check:
    """See the module docstring (`head`). `features`: the output layer's inputs at the read position over the texts."""
    name = "head"
    layer = subject.output_layer()
    weight = layer.weight.detach().double().cpu()
    if subject.missing_head:
        return Check(
            name,
            FAILED,
            None,
            "present in the checkpoint",
            f"{', '.join(subject.missing_head)} missing from the checkpoint: transformers drew the head at load",
        )
    if not torch.isfinite(weight).all() or weight.abs().max() == 0:
        return Check(name, FAILED, None, "finite, not all zero", "the head's weights are non-finite or all zero")
    run = subject.run_config
    extra: dict = {}
    if subject.kind == "rewardlab" and "seed" in run:
        from rewardlab.modeling.reward_model import initial_head

        hidden_size = subject.model.causal_lm.get_input_embeddings().embedding_dim
        fresh = initial_head(hidden_size, subject.model.config, int(run["seed"]))
        fresh_out = fresh.net if isinstance(fresh.net, torch.nn.Linear) else fresh.net[-1]
        initial = fresh_out.weight.detach().double()
        distance = ((weight - initial).norm() / initial.norm()).item()
        extra["distance_from_seed_draw"] = distance
        if distance < SEED_DISTANCE:
            return Check(
                name,
                FAILED,
                distance,
                f"relative distance from the seed-{run['seed']} draw > {SEED_DISTANCE:g}",
                "the head equals the one its run's seed draws: it was never trained (or was reset)",
                extra,
            )
        if run.get("freeze_backbone"):
            return Check(
                name,
                PASSED,
                distance,
                f"relative distance from the seed-{run['seed']} draw > {SEED_DISTANCE:g}",
                "frozen-backbone run: the head moved from its initial draw (alignment does not apply)",
                extra,
            )
    ratio = alignment_ratio(features, weight)[0].item()
    baseline = random_alignment(features)
    quantile = baseline.quantile(ALIGNMENT_QUANTILE).item()
    share = (baseline < ratio).double().mean().item()
    extra |= {"random_quantile_99": quantile, "random_median": baseline.median().item(), "share_of_random_below": share}
    tolerance = f"> {quantile:.2f} (99th percentile of {RANDOM_DIRECTIONS} random directions)"
    if math.isnan(ratio):
        return Check(name, FAILED, None, tolerance, "the features do not vary over the texts", extra)
    if ratio > quantile:
        detail = (
            f"scores vary along the head {ratio:.1f}x as much as along a random direction: head and backbone trained together"
        )
        return Check(name, PASSED, ratio, tolerance, detail, extra)
    moved = f"; it moved {extra['distance_from_seed_draw']:.3g} from its seed draw" if "distance_from_seed_draw" in extra else ""
    detail = (
        f"the head is a random direction to this backbone ({share:.0%} of random directions align less{moved}): lost and "
        "re-initialised, drawn afresh or swapped after training, or not trained long enough to shape the backbone"
    )
    return Check(name, FAILED, ratio, tolerance, detail, extra)


def check_pad_eos(subject: Subject, texts: Texts) -> Check:
    """The returned score equals the head at the last real token, each text alone and in a right-padded batch."""
    alone = [subject.read([row]) for row in texts.rows]
    batch = subject.read(texts.rows, "right")
    gaps = [within(r.returned, r.at_last) for r in alone] + [within(batch.returned, batch.at_last)]
    worst = max(g for g, _ in gaps)
    ok = all(o for _, o in gaps)
    tolerance = f"{EXACT:g} x max(1, |score|)"
    tok = subject.tokenizer
    pads = f"pad {tok.pad_token!r} (id {tok.pad_token_id}), EOS {tok.eos_token!r} (id {tok.eos_token_id})"
    if subject.kind == "transformers":
        pads += f", classifier reads past pad id {subject.model.config.pad_token_id}"
    if ok:
        return Check("pad_eos", PASSED, worst, tolerance, f"scores are read at the last token of each text; {pads}")
    reads_early = [i for i, (g, o) in enumerate(gaps[:-1]) if not o]
    detail = (
        f"the score is not the head's value at the text's last token ({len(reads_early)} of {len(alone)} texts alone"
        f"{', and in a padded batch' if not gaps[-1][1] else ''}); {pads}"
    )
    return Check("pad_eos", FAILED, worst, tolerance, detail)


def check_text_convention(subject: Subject) -> Check:
    """The tokenizer encodes the recorded texts as the tokenizer saved with the checkpoint did."""
    name, tolerance = "text_convention", "identical token ids"
    directory = subject.record_dir()
    record_file = directory / TEXT_RECORD_NAME if directory is not None else None
    if record_file is None or not record_file.exists():
        return Check(name, SKIPPED, None, tolerance, f"no {TEXT_RECORD_NAME} (written by rewardlab's save and export)")
    record = json.loads(record_file.read_text())
    differing = []
    for kind, probe in record.get("probes", {}).items():
        try:
            now = encode_prompt_response(subject.tokenizer, probe["prompt"], probe["response"]).input_ids
        except Exception as err:  # the template no longer renders it
            differing.append(f"{kind}: cannot encode now ({err})")
            continue
        then = probe["input_ids"]
        if now != then:
            at = next((i for i, (a, b) in enumerate(zip(now, then, strict=False)) if a != b), min(len(now), len(then)))
            saved, current = subject.tokenizer.decode(then[at:]), subject.tokenizer.decode(now[at:])
            differing.append(f"{kind}: from token {at}, saved {saved!r}, now {current!r}")
    n = len(record.get("probes", {}))
    if differing:
        return Check(
            name,
            FAILED,
            float(len(differing)),
            tolerance,
            "the text convention changed since the checkpoint was saved: " + "; ".join(differing),
        )
    return Check(name, PASSED, 0.0, tolerance, f"{n} recorded text(s) encode as when the checkpoint was saved")


def _end_of_turn_tokens(tokenizer) -> list[str]:
    """EOS (even when it is also the pad token, as in SmolLM2) and the other special tokens that can end a turn (not BOS,
    pad or unk)."""
    skip = {tokenizer.bos_token, tokenizer.pad_token, tokenizer.unk_token}
    others = [t for t in getattr(tokenizer, "all_special_tokens", []) if t and t not in skip]
    return [t for t in dict.fromkeys([tokenizer.eos_token, *others]) if t]


def check_chat_closing(subject: Subject) -> Check:
    """The chat template closes an assistant turn with an end-of-turn special token."""
    name = "chat_closing"
    tolerance = "an end-of-turn special token in the closing"
    turn = assistant_turn_text(subject.tokenizer)
    if turn is None:
        return Check(name, SKIPPED, None, tolerance, "no chat template (plain strings get EOS appended)")
    closing = turn[1]
    enders = [t for t in _end_of_turn_tokens(subject.tokenizer) if t in closing]
    if enders:
        return Check(name, PASSED, None, tolerance, f"an assistant turn closes with {closing!r}")
    return Check(
        name,
        FAILED,
        None,
        tolerance,
        f"the template closes an assistant turn with {closing!r}, no end-of-turn token: the reward is read at "
        "the answer's last content token, not where a policy stops",
    )


def check_closing_after_eos(subject: Subject, texts: Texts) -> Check:
    """Info: the tokens the template writes after EOS, and how much the reward moves without them."""
    name = "closing_after_eos"
    after = closing_ids_after_eos(subject.tokenizer)
    if not after:
        return Check(name, INFO, 0.0, "-", "nothing after EOS: a generation that stops at EOS is scored as training read it")
    rows = [row[: len(row) - len(after)] for row in texts.rows if len(row) > len(after) and row[-len(after) :] == after]
    if not rows:
        return Check(name, INFO, None, "-", f"the template writes {subject.tokenizer.decode(after)!r} after EOS")
    full = subject.read([row + after for row in rows]).returned
    cut = subject.read(rows).returned
    gap = (full - cut).abs().max().item()
    return Check(
        name,
        INFO,
        gap,
        "-",
        f"the template writes {subject.tokenizer.decode(after)!r} after EOS; scoring a generation that stops at "
        f"EOS without it moves the reward by up to {gap:.3g} (rewardlab serve, ppo and verl close the turn)",
    )


def check_padding_sides(subject: Subject, texts: Texts) -> Check:
    right = subject.read(texts.rows, "right").returned
    left = subject.read(texts.rows, "left").returned
    worst, ok = within(right, left)
    return Check(
        "padding_sides",
        PASSED if ok else FAILED,
        worst,
        f"{EXACT:g} x max(1, |score|)",
        "right- and left-padded batches give the same scores"
        if ok
        else "the padding side changes the scores (position ids or the pad token)",
    )


def check_packed(subject: Subject, texts: Texts) -> Check:
    name, tolerance = "packed", f"{EXACT:g} x max(1, |score|)"
    if subject.kind != "rewardlab":
        return Check(name, SKIPPED, None, tolerance, "rewardlab models only (a transformers classifier has no packed path)")
    if not subject.model.can_pack():
        return Check(name, SKIPPED, None, tolerance, "this architecture runs padded only")
    padded = subject.read(texts.rows).returned
    packed = subject.read(texts.rows, packed=True).returned
    worst, ok = within(padded, packed)
    return Check(
        name,
        PASSED if ok else FAILED,
        worst,
        tolerance,
        "padding-free and padded forwards agree" if ok else "padding-free scores differ from padded ones",
    )


def check_export(subject: Subject, texts: Texts, reference: torch.Tensor) -> Check:
    """Export to a temporary directory, load it as a plain transformers classifier, score the same texts."""
    from rewardlab.export import ExportError, export_sequence_classifier

    name, tolerance = "export", f"{EXACT:g} x max(1, |score|)"
    if subject.kind != "rewardlab":
        return Check(name, SKIPPED, None, tolerance, "already a transformers classifier")
    with tempfile.TemporaryDirectory(prefix="rewardlab-doctor-") as tmp:
        try:
            report = export_sequence_classifier(subject.source, Path(tmp) / "export", device=subject.device)
        except ExportError as err:
            if subject.model.config.head != "linear":
                return Check(name, SKIPPED, None, tolerance, f"not exportable: {err}")
            return Check(name, FAILED, None, tolerance, f"export failed its self-check: {err}")
        exported = load_subject(str(Path(tmp) / "export"), subject.device)
        encoded = [encode_prompt_response(exported.tokenizer, p, r).input_ids for p, r in texts.pairs]
        theirs = exported.read(encoded).returned
    worst, ok = within(reference, theirs)
    detail = (
        f"plain transformers ({report['architecture']}, pad {report['pad_token']!r}) gives rewardlab's scores"
        if ok
        else "the exported classifier's scores differ"
    )
    return Check(name, PASSED if ok else FAILED, worst, tolerance, detail, {"export_self_check": report["max_abs_diff"]})


def _server_scores(subject: Subject, texts: Texts) -> tuple[torch.Tensor, torch.Tensor]:
    from fastapi.testclient import TestClient

    from rewardlab.data.templates import render_prompt_response
    from rewardlab.serve import create_app

    items = [{"prompt": p, "response": r} for p, r in texts.pairs]
    queries, prompts = [], []
    for p, r in texts.pairs:
        prompt_text, response_text, append_eos = render_prompt_response(subject.tokenizer, p, r)
        eos = subject.tokenizer.eos_token if append_eos else ""
        bos = (subject.tokenizer.bos_token or "") if isinstance(p, str) and _adds_bos(subject.tokenizer) else ""
        queries.append(bos + prompt_text + response_text + eos)
        prompts.append(bos + prompt_text)
    with TestClient(create_app(subject.model)) as client:
        scored = client.post("/score", json={"items": items})
        rewarded = client.post("/get_reward", json={"query": queries, "prompts": prompts})
    if scored.status_code != 200 or rewarded.status_code != 200:
        raise RuntimeError(f"the server answered {scored.status_code} / {rewarded.status_code}: {scored.text[:200]}")
    return (
        torch.tensor([row["reward"] for row in scored.json()["results"]]),
        torch.tensor(rewarded.json()["rewards"]),
    )


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [bos]


def check_server(subject: Subject, texts: Texts, reference: torch.Tensor) -> Check:
    name, tolerance = "server", f"{EXACT:g} x max(1, |score|)"
    if subject.kind != "rewardlab":
        return Check(name, SKIPPED, None, tolerance, "rewardlab serve loads rewardlab checkpoints")
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
    except ImportError:
        return Check(name, SKIPPED, None, tolerance, "needs the serve extra (fastapi) and httpx")
    score, get_reward = _server_scores(subject, texts)
    worst_score, ok_score = within(reference, score)
    worst_reward, ok_reward = within(reference, get_reward)
    ok = ok_score and ok_reward
    detail = (
        "/score and /get_reward give the same scores"
        if ok
        else (f"the server differs: /score {worst_score:.2e}, /get_reward {worst_reward:.2e}")
    )
    return Check(
        name,
        PASSED if ok else FAILED,
        max(worst_score, worst_reward),
        tolerance,
        detail,
        {"score": worst_score, "get_reward": worst_reward},
    )


def bf16_tolerance(reference: torch.Tensor) -> float:
    """5% of the fp32 scores' std over the texts (what rankings feel) plus two bf16 units in the last place of the
    largest |score| (2^-7 of it: the rounding of the score itself, which no bf16 model avoids)."""
    reference = reference.double()
    spread = reference.std().item() if reference.numel() > 1 else 0.0
    return BF16_SPREAD_SHARE * spread + 2.0**-7 * reference.abs().max().item()


def check_bf16(subject: Subject, texts: Texts, reference: torch.Tensor) -> Check:
    """Casts the model to bf16 (run last). A broken bf16 path (overflow, a kernel) gives errors of the scores' own size;
    rounding gave 0.3-5% of the scores' std on the models tried (tiny Llamas, SmolLM2 with 30 layers: 5.1%)."""
    name = "bf16"
    allowed = bf16_tolerance(reference)
    tolerance = f"{BF16_SPREAD_SHARE:g} x std + 2^-7 x max |score| (fp32; {allowed:.3g})"
    if allowed == 0:
        return Check(name, SKIPPED, None, tolerance, "the fp32 scores are all 0")
    subject.model.to(torch.bfloat16)
    low = subject.read(texts.rows).returned
    worst = (low.double() - reference.double()).abs().max().item()
    spread = reference.double().std().item() if reference.numel() > 1 else float("nan")
    detail = f"bf16 differs from fp32 by up to {worst / spread:.1%} of the fp32 scores' std"
    return Check(name, PASSED if worst <= allowed else FAILED, worst, tolerance, detail, {"fp32_std": spread})


def data_checks(subject: Subject, data: Texts, n_pairs: int, batch_size: int) -> tuple[list[Check], torch.Tensor]:
    """Info rows on preference data: rows 0..n-1 chosen, n..2n-1 rejected. Returns the rows and the features."""
    reading = subject.read_in_batches(data.rows, batch_size)
    rewards = reading.returned
    lengths = torch.tensor([len(e.input_ids) - e.response_start for e in data.encoded], dtype=torch.float64)
    chosen, rejected = rewards[:n_pairs], rewards[n_pairs:]
    model_accuracy = pairwise_accuracy(chosen.double(), rejected.double(), torch.float64).item()
    baseline = length_accuracy(lengths[:n_pairs], lengths[n_pairs:])
    r, rho = pearson(rewards, lengths), spearman(rewards, lengths)
    rows = [
        Check(
            "length_baseline",
            INFO,
            baseline,
            "-",
            f"the longer response wins in {baseline:.1%} of {n_pairs} pairs; the model: {model_accuracy:.1%}",
            {"model_accuracy": model_accuracy, "pairs": n_pairs},
        ),
        Check(
            "reward_length_correlation",
            INFO,
            r,
            "-",
            f"Pearson {r:.3f}, Spearman {rho:.3f} between reward and response tokens over {2 * n_pairs} responses",
            {"spearman": rho},
        ),
    ]
    return rows, reading.features


def data_texts(tokenizer, spec: str, format: str | None, limit: int, max_length: int | None) -> tuple[Texts, int]:
    """Chosen then rejected responses of the first `limit` pairs of a preference file, truncated keeping their end."""
    from rewardlab.data.loading import load_preferences
    from rewardlab.data.pairs import encode_pairs

    examples = load_preferences(spec, format=format, limit=limit).examples
    pairs, _ = encode_pairs(tokenizer, examples, max_length, "keep_end")
    if not pairs:
        raise UserError(f"{spec}: no pair left after truncation")
    kept = [examples[p.index] for p in pairs]
    texts = [(e.prompt, e.chosen) for e in kept] + [(e.prompt, e.rejected) for e in kept]
    return Texts(texts, [p.chosen for p in pairs] + [p.rejected for p in pairs]), len(pairs)


# ----------------------------------------------------------------------------------------------------------------------
# the whole examination


def examine(
    model: str,
    data: str | None = None,
    *,
    format: str | None = None,
    limit: int = DATA_LIMIT,
    max_length: int | None = EvalBatchingSpec.max_length,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    on_check: Callable[[Check], None] | None = None,
) -> dict:
    """Run every check on `model`; returns {"model", "kind", "checks": [rows], "failed": [names], "seconds"}."""
    started = time.perf_counter()
    subject = load_subject(model, device)
    probes = probe_texts(subject.tokenizer)
    checks: list[Check] = []

    def run(check: Check) -> None:
        checks.append(check)
        if on_check is not None:
            on_check(check)

    first = subject.read(probes.rows)
    features, reference = first.features, first.returned
    data_rows: list[Check] = []
    if data is not None:
        texts, n_pairs = data_texts(subject.tokenizer, data, format, limit, max_length)
        data_rows, data_features = data_checks(subject, texts, n_pairs, batch_size)
        features = torch.cat([features, data_features])
    for name, check in _checks(subject, probes, features, reference):
        start = time.perf_counter()
        try:
            result = check()
        except Exception as err:  # a check that cannot run on this checkpoint fails, naming why
            result = Check(name, FAILED, None, "-", f"could not run: {type(err).__name__}: {err}")
        result.seconds = time.perf_counter() - start
        run(result)
    for row in data_rows:
        run(row)
    failed = [c.name for c in checks if c.status == FAILED]
    return {
        "model": model,
        "kind": subject.kind,
        "checks": [c.to_row() for c in checks],
        "failed": failed,
        "seconds": time.perf_counter() - started,
    }


def _checks(
    subject: Subject, probes: Texts, features: torch.Tensor, reference: torch.Tensor
) -> Iterator[tuple[str, Callable[[], Check]]]:
    """(name, the check to run), in order; bf16 last (it casts the model)."""
    yield "head", lambda: check_head(subject, features)
    yield "pad_eos", lambda: check_pad_eos(subject, probes)
    yield "text_convention", lambda: check_text_convention(subject)
    yield "chat_closing", lambda: check_chat_closing(subject)
    yield "closing_after_eos", lambda: check_closing_after_eos(subject, probes)
    yield "padding_sides", lambda: check_padding_sides(subject, probes)
    yield "packed", lambda: check_packed(subject, probes)
    yield "export", lambda: check_export(subject, probes, reference)
    yield "server", lambda: check_server(subject, probes, reference)
    yield "bf16", lambda: check_bf16(subject, probes, reference)


def format_table(rows: Sequence[dict]) -> str:
    """The checks as a plain-text table: check, status, figure, tolerance, detail."""
    header = ("check", "status", "figure", "tolerance", "detail")
    body = [
        (r["name"], r["status"], "-" if r["figure"] is None else f"{r['figure']:.4g}", r["tolerance"], r["detail"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(line)) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(lines)

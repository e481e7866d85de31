"""Synthetic preference data labelled by the gold reward (the GRM paper's synthetic setting), written as user data.

For each prompt the base policy samples two responses a, b; pairs with identical or blank responses (and, by default,
equal gold) are skipped. The label is a Bradley-Terry draw on the gold rewards, then symmetric label noise:

    P(a preferred) = sigmoid((g_a - g_b) / temperature)          (temperature 0: a preferred iff g_a > g_b)
    then the drawn label is flipped with probability label_noise  (independently per pair)

So with temperature 0 the share of pairs whose `chosen` has the LOWER gold reward is label_noise in expectation;
`expected_flip_rate` gives it for any temperature and `measured_flip_rate` measures it on data.

Files are JSONL in TRL's conversational format: `prompt` (user turn), `chosen` / `rejected` (assistant turn), plus
`source` (family), `subset` (family/style), `margin` (g_chosen - g_rejected, the rating difference the margin baseline
uses), `gold_chosen`, `gold_rejected`. Splits: train (ID families and styles), test_id (held-out ID inputs) and test_ood
(OOD families or styles); the test splits get clean labels (gold ordering) by default. `write_preference_data` also holds
out `val_id`: ID pairs drawn after the largest training set, for choosing training length by ID validation only.

World 4's shortcut (`rewardlab.tasks.world`): in ID splits (train, val_id, test_id), a pair whose style cue sits on the
rejected response only is kept with probability (1 - s) / s, one whose cue sits on the chosen response only always, so
that among cue-discordant pairs a share s (`shortcut_strength`, when the policy's cue is independent of quality) has the
cue on the chosen side. test_ood is never filtered: there the cue says nothing about the label.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rewardlab.data.loading import preference_to_dict
from rewardlab.data.types import PreferenceExample
from rewardlab.errors import UserError
from rewardlab.generation import sample
from rewardlab.progress import progress as show_progress
from rewardlab.runtime import write_json
from rewardlab.runtime import write_jsonl as write_records
from rewardlab.tasks.world import (
    SPLITS,
    WORLD_VERSION,
    TaskInstance,
    gold_score,
    has_cue,
    iter_tasks,
    make_tasks,
    world_spec,
)

DATA_SIZES = {"small": 1_000, "large": 4_000}  # train pairs for the data-size study (small is a prefix of large)
TEST_SIZES = {"test_id": 1_000, "test_ood": 2_000}
VAL_SIZE = 500  # val_id pairs (ID validation: training length is chosen on these, never on a test set)
SHORTCUT_SPLITS = ("train", "test_id")  # ID splits (val_id comes from the train stream); test_ood never carries the shortcut
PROMPTS_PER_CHUNK = 256  # fixed, so a smaller dataset with the same seed is a prefix of a larger one
MAX_NEW_TOKENS = 16


# ---------------------------------------------------------------- labelling math


def bradley_terry_prob(gold_a: torch.Tensor, gold_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """P(a > b) = sigmoid((g_a - g_b) / temperature); temperature 0 is the hard limit (1, 0, or 0.5 on ties)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    diff = gold_a - gold_b
    if temperature == 0:
        return (diff > 0).double() + 0.5 * (diff == 0).double()
    return torch.sigmoid(diff / temperature)


def expected_flip_rate(gold_a: torch.Tensor, gold_b: torch.Tensor, temperature: float, label_noise: float) -> float:
    """Expected share of pairs (with g_a != g_b) whose label disagrees with the gold ordering.

    Per pair, the BT draw disagrees w.p. q = sigmoid(-|g_a - g_b| / T); the flip then gives q (1 - eps) + (1 - q) eps.
    """
    gold_a, gold_b = gold_a.double(), gold_b.double()
    unequal = gold_a != gold_b
    q = bradley_terry_prob(torch.zeros_like(gold_a[unequal]), (gold_a - gold_b)[unequal].abs(), temperature)
    return (q * (1 - label_noise) + (1 - q) * label_noise).mean().item()


def draw_labels(
    gold_a: torch.Tensor, gold_b: torch.Tensor, temperature: float, label_noise: float, generator: torch.Generator
) -> torch.Tensor:
    """Bool tensor, True where a is chosen: a Bradley-Terry draw, then each label flipped w.p. label_noise."""
    if not 0 <= label_noise <= 1:
        raise UserError(f"label_noise must be in [0, 1], got {label_noise}")
    p_a = bradley_terry_prob(gold_a.double(), gold_b.double(), temperature)
    a_chosen = torch.rand(p_a.shape, generator=generator, dtype=torch.float64) < p_a
    flip = torch.rand(p_a.shape, generator=generator, dtype=torch.float64) < label_noise
    return a_chosen ^ flip


def shortcut_keep_probability(cue_chosen: bool, cue_rejected: bool, strength: float) -> float:
    """World 4: probability of keeping an ID pair given where the style cue sits. Keeping cue-on-rejected pairs w.p.
    (1 - s) / s makes the cue-on-chosen share of cue-discordant pairs s / (s + (1 - s)) = s when the two kinds are
    equally common before filtering; s <= 0.5 keeps every pair (no shortcut)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"shortcut strength must be in [0, 1), got {strength}")
    if strength <= 0.5 or not cue_rejected or cue_chosen:
        return 1.0
    return (1.0 - strength) / strength


def cue_on_chosen_share(examples: Sequence[PreferenceExample]) -> float | None:
    """Among pairs where exactly one response ends with the style cue, the share where it is the chosen one."""
    discordant = [has_cue(_text(e.chosen)) for e in examples if has_cue(_text(e.chosen)) != has_cue(_text(e.rejected))]
    return sum(discordant) / len(discordant) if discordant else None


def _text(response: Any) -> str:
    return response if isinstance(response, str) else "".join(m["content"] for m in response)


def measured_flip_rate(examples: Sequence[PreferenceExample]) -> float:
    """Share of examples (with unequal gold) whose chosen response has the lower gold reward."""
    golds = [(e.metadata["gold_chosen"], e.metadata["gold_rejected"]) for e in examples]
    unequal = [(c, r) for c, r in golds if c != r]
    return sum(c < r for c, r in unequal) / max(1, len(unequal))


# ---------------------------------------------------------------- data generation


def make_preference_data(
    policy: Any,
    tokenizer: Any,
    n_pairs: int,
    split: str = "train",
    seed: int = 0,
    *,
    label_noise: float = 0.0,
    temperature: float = 0.05,
    skip_ties: bool = True,
    sampling_temperature: float = 1.0,
    batch_size: int = 256,
    prompts_per_chunk: int = PROMPTS_PER_CHUNK,
    world_version: int = WORLD_VERSION,
    progress: bool = False,
) -> list[PreferenceExample]:
    """`n_pairs` labelled pairs of two policy samples per prompt of `split`; deterministic in `seed`.

    `temperature` / `label_noise` set the labels (module docstring); `sampling_temperature` is the policy's. Prompts
    are sampled in chunks of `prompts_per_chunk`, each seeded by (seed, chunk): with the same seed and chunk size, a
    smaller dataset is a prefix of a larger one. In world 4, ID splits carry the shortcut (module docstring).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {SPLITS}")
    strength = world_spec(world_version).shortcut_strength if split in SHORTCUT_SPLITS else 0.0
    tasks: Iterator[TaskInstance] = iter_tasks(split, seed)
    generator = torch.Generator().manual_seed(seed)
    shortcut_generator = torch.Generator().manual_seed(seed + 104_729)  # its own stream: labels match the world without it
    max_chunks = 50 + 4 * math.ceil(n_pairs / prompts_per_chunk)
    examples: list[PreferenceExample] = []
    bar = show_progress(total=n_pairs, desc=f"preferences {split}", enabled=progress)
    for chunk_index in itertools.count():
        if len(examples) >= n_pairs:
            break
        if chunk_index > max_chunks:
            raise RuntimeError("the policy keeps producing identical pairs; raise sampling_temperature")
        chunk = list(itertools.islice(tasks, prompts_per_chunk))
        responses = sample(
            policy,
            tokenizer,
            [t.messages for t in chunk],
            n=2,
            max_new_tokens=MAX_NEW_TOKENS,
            temperature=sampling_temperature,
            top_p=1.0,
            batch_size=batch_size,
            seed=seed * 7919 + chunk_index,
        ).texts()
        pairs = label_pairs(chunk, responses[0::2], responses[1::2], temperature, label_noise, generator, skip_ties)
        for task, (chosen, gold_chosen), (rejected, gold_rejected) in pairs:
            if len(examples) >= n_pairs:
                break
            keep = shortcut_keep_probability(has_cue(chosen), has_cue(rejected), strength)
            if keep < 1.0 and torch.rand((), generator=shortcut_generator, dtype=torch.float64).item() >= keep:
                continue
            examples.append(
                PreferenceExample(
                    prompt=task.messages,
                    chosen=[{"role": "assistant", "content": chosen}],
                    rejected=[{"role": "assistant", "content": rejected}],
                    margin=gold_chosen - gold_rejected,
                    source=task.family,
                    subset=task.subset,
                    metadata={"gold_chosen": gold_chosen, "gold_rejected": gold_rejected, "split": split},
                )
            )
            bar.update(1)
    bar.close()
    return examples


def label_pairs(
    tasks: Sequence[TaskInstance],
    response_a: Sequence[str],
    response_b: Sequence[str],
    temperature: float,
    label_noise: float,
    generator: torch.Generator,
    skip_ties: bool = True,
) -> list[tuple[TaskInstance, tuple[str, float], tuple[str, float]]]:
    """(task, (chosen, gold), (rejected, gold)) of every usable pair, in order: labels drawn for all pairs at once
    (`draw_labels`, so the generator advances the same however many are usable), then identical responses, gold ties
    (with `skip_ties`) and blank responses left out."""
    gold_a = [gold_score(r, t.answer) for r, t in zip(response_a, tasks, strict=True)]
    gold_b = [gold_score(r, t.answer) for r, t in zip(response_b, tasks, strict=True)]
    a_chosen = draw_labels(
        torch.tensor(gold_a, dtype=torch.float64),
        torch.tensor(gold_b, dtype=torch.float64),
        temperature,
        label_noise,
        generator,
    ).tolist()
    pairs = []
    for i, task in enumerate(tasks):
        if response_a[i] == response_b[i] or (skip_ties and gold_a[i] == gold_b[i]):
            continue
        if not response_a[i].strip() or not response_b[i].strip():
            continue  # user-data loaders reject blank responses; they are rare (EOS first) and score 0 anyway
        a, b = (response_a[i], gold_a[i]), (response_b[i], gold_b[i])
        pairs.append((task, a, b) if a_chosen[i] else (task, b, a))
    return pairs


# ---------------------------------------------------------------- files


def example_to_record(example: PreferenceExample) -> dict[str, Any]:
    """TRL-format record plus the gold rewards of both responses."""
    gold = {k: example.metadata[k] for k in ("gold_chosen", "gold_rejected") if k in example.metadata}
    return preference_to_dict(example) | gold


def write_jsonl(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Atomic JSONL write (the project's writer); returns the path."""
    write_records(path, records)
    return Path(path)


def write_preference_data(
    out_dir: str | Path,
    policy: Any = None,
    tokenizer: Any = None,
    *,
    sizes: dict[str, int] | None = None,
    test_sizes: dict[str, int] | None = None,
    seed: int = 0,
    label_noise: float = 0.0,
    temperature: float = 0.05,
    clean_test_labels: bool = True,
    val_size: int = 0,
    world_version: int = WORLD_VERSION,
    progress: bool = True,
) -> dict[str, Path]:
    """Write train_<size>.jsonl (each smaller size a prefix of the largest), val_id.jsonl (when `val_size`: the next
    `val_size` train-split pairs, same labels as train), test_id.jsonl, test_ood.jsonl and world.json (the settings);
    returns {name: path}. `policy=None` uses `get_base_policy()` of `world_version`."""
    if policy is None or tokenizer is None:
        from rewardlab.tasks.policy import BasePolicyConfig, get_base_policy

        policy, tokenizer, _ = get_base_policy(BasePolicyConfig(world_version=world_version), progress=progress)
    sizes = dict(DATA_SIZES if sizes is None else sizes)
    test_sizes = dict(TEST_SIZES if test_sizes is None else test_sizes)
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    n_train = max(sizes.values())
    train_stream = make_preference_data(
        policy,
        tokenizer,
        n_train + val_size,
        "train",
        seed,
        label_noise=label_noise,
        temperature=temperature,
        world_version=world_version,
        progress=progress,
    )
    train, val = train_stream[:n_train], train_stream[n_train:]
    for name, n in sizes.items():
        paths[f"train_{name}"] = write_jsonl(out_dir / f"train_{name}.jsonl", [example_to_record(e) for e in train[:n]])
    if val_size:
        paths["val_id"] = write_jsonl(out_dir / "val_id.jsonl", [example_to_record(e) for e in val])
    shortcut = {"train": cue_on_chosen_share(train)}
    test_noise, test_temperature = (0.0, 0.0) if clean_test_labels else (label_noise, temperature)
    for split, n in test_sizes.items():
        examples = make_preference_data(
            policy,
            tokenizer,
            n,
            split,
            seed + 1,
            label_noise=test_noise,
            temperature=test_temperature,
            world_version=world_version,
            progress=progress,
        )
        paths[split] = write_jsonl(out_dir / f"{split}.jsonl", [example_to_record(e) for e in examples])
        shortcut[split] = cue_on_chosen_share(examples)
    settings = {
        "world_version": world_version,
        "shortcut_strength": world_spec(world_version).shortcut_strength,
        "cue_on_chosen_share": shortcut,  # among cue-discordant pairs; ~0.5 means no shortcut
        "val_size": len(val),
        "seed": seed,
        "label_noise": label_noise,
        "temperature": temperature,
        "sizes": sizes,
        "test_sizes": test_sizes,
        "clean_test_labels": clean_test_labels,
        "measured_flip_rate_train": measured_flip_rate(train),
    }
    paths["world"] = out_dir / "world.json"
    write_json(paths["world"], settings)
    return paths


def write_prompts(path: str | Path, split: str, n: int, seed: int = 0) -> Path:
    """Prompts of a split for best-of-N / PPO, one JSON object a line: prompt (messages), source, subset."""
    records = [{"prompt": t.messages, "source": t.family, "subset": t.subset} for t in make_tasks(split, n, seed)]
    return write_jsonl(path, records)

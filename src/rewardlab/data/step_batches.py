"""Batches of step-labelled examples for a process reward model (`rewardlab.data.step_encoding` encodes them).

One (B, T) batch, padded on the right:
    input_ids, attention_mask   the prompt and its steps, each step followed by the separator
    step_ends                   (B, S) the token index each step's score is read at, -1 past a row's steps
    step_labels, labelled       (B, S) 1 correct / 0 wrong, and whether the step has a label (ProcessBench leaves the steps
                                after the first error unlabelled: they take no part in the loss)
    response_mask               (B, T) the step tokens of the rows whose every step is labelled correct: the responses GRM's
                                SFT regulariser may imitate (a response with a wrong step is not one to learn to write)
    index                       (B,) each row's position in its data set
"""

from __future__ import annotations

import torch

from rewardlab.data.step_encoding import EncodedStepExample
from rewardlab.data.templates import EncodedSequence, pad_sequences
from rewardlab.masks import response_mask


def all_correct(example: EncodedStepExample) -> bool:
    """Every kept step labelled correct (None, unknown, is not)."""
    return all(label is True for label in example.labels)


def collate_steps(examples: list[EncodedStepExample], pad_id: int) -> dict[str, torch.Tensor]:
    sequences = [EncodedSequence(e.encoded.input_ids, e.encoded.response_start) for e in examples]
    input_ids, attention_mask, response_start = pad_sequences(sequences, pad_id, "right")
    n_steps = max(len(e.encoded.step_ends) for e in examples)
    step_ends = torch.full((len(examples), n_steps), -1, dtype=torch.long)
    step_labels = torch.zeros((len(examples), n_steps), dtype=torch.float32)
    labelled = torch.zeros((len(examples), n_steps), dtype=torch.bool)
    for row, example in enumerate(examples):
        ends = example.encoded.step_ends
        step_ends[row, : len(ends)] = torch.tensor(ends, dtype=torch.long)
        for k, label in enumerate(example.labels):
            if label is not None:
                step_labels[row, k], labelled[row, k] = float(label), True
    imitate = torch.tensor([all_correct(e) for e in examples])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "step_ends": step_ends,
        "step_labels": step_labels,
        "labelled": labelled,
        "response_mask": response_mask(attention_mask, response_start) & imitate[:, None],
        "index": torch.tensor([e.index for e in examples], dtype=torch.long),
    }


class StepCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[EncodedStepExample]) -> dict[str, torch.Tensor]:
        return collate_steps(examples, self.pad_id)

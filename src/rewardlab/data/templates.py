"""Turning (prompt, response) into token ids, and where the response starts.

Conventions (TRL's):
- Conversational data (messages) is rendered by the tokenizer's chat template. The prompt is rendered with
  `add_generation_prompt=True`; the response is whatever the full conversation's rendering adds after it (the template's own
  end-of-turn token included), exactly the tokens a policy would generate after that prompt.
- Standard data (strings) is concatenated as is: `prompt + response`, tokenised as one text with the tokenizer's usual
  special tokens (e.g. BOS before it), and its EOS token after the response.
- Messages with a tokenizer that has no chat template use PLAIN_TEMPLATE: each turn as "Role: content" separated by blank
  lines, the prompt ending in "Assistant: ", the response followed by EOS.

The rendered prompt and response are tokenised as ONE text, `prompt + response` (then EOS), as transformers, TRL's
RewardTrainer, RewardBench, OpenRLHF's remote reward model and `rewardlab serve`'s /get_reward tokenise it: a BPE merge
across the boundary (HH prompts end in "Assistant: ", and " " + "Hello" is one token " Hello") is kept, so a reward model
is trained on the token sequences its users send. The response starts at the first token whose character span (the fast
tokenizer's offsets) ends after the prompt's last character: a token that straddles the boundary belongs to the response.
Tokenizers without offsets (slow, Python ones) place it where the joined ids depart from the prompt's own ids, moved on
over tokens whose decoded text still lies inside the prompt (`response_start_without_offsets`). For the built-in
byte-level tokenizer (no merges) the joined ids are the prompt's ids followed by the response's.

Truncation of over-long sequences (`max_length`): `keep_end` drops tokens from the start (the prompt's oldest turns first),
because the reward is read at the end; `drop` skips the example. Callers count both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewardlab.choices import Truncation
from rewardlab.data.types import Message, Text
from rewardlab.errors import UserError
from rewardlab.masks import pad_rows


@dataclass
class EncodedSequence:
    input_ids: list[int]
    response_start: int  # index of the first response token in input_ids
    truncated: bool = False


def keep_end(sequence: EncodedSequence, max_length: int) -> EncodedSequence:
    """Truncation `keep_end`: drop the oldest tokens, where the reward is not read (the sequence itself when it fits).
    The response start moves with the cut; it is 0 once the cut reaches into the response."""
    cut = len(sequence.input_ids) - max_length
    if cut <= 0:
        return sequence
    return EncodedSequence(sequence.input_ids[cut:], max(sequence.response_start - cut, 0), truncated=True)


def _as_messages(response: Text) -> list[Message]:
    return response if isinstance(response, list) else [{"role": "assistant", "content": response}]


def _as_string(response: Text) -> str:
    if isinstance(response, str):
        return response
    return "".join(m["content"] for m in response)


def _plain_render(messages: list[Message], add_generation_prompt: bool) -> str:
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    if add_generation_prompt:
        text += "\n\nAssistant: "
    return text


def render_prompt_response(tokenizer, prompt: Text, response: Text) -> tuple[str, str, bool]:
    """(prompt_text, response_text, append_eos). Plain strings get EOS appended; templates supply their own end token."""
    if isinstance(prompt, str):
        return prompt, _as_string(response), True
    messages = _as_messages(response)
    if getattr(tokenizer, "chat_template", None):
        prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(prompt + messages, tokenize=False)
        if not full_text.startswith(prompt_text):
            raise UserError(
                "the chat template renders the prompt differently inside the full conversation; "
                "cannot locate where the response starts"
            )
        return prompt_text, full_text[len(prompt_text) :], False
    # Plain template: the response is the assistant turn's content; turns after the first are separated as in the prompt.
    prompt_text = _plain_render(prompt, add_generation_prompt=True)
    response_text = messages[0]["content"]
    if len(messages) > 1:
        response_text += "\n\n" + _plain_render(messages[1:], add_generation_prompt=False)
    return prompt_text, response_text, True


def assistant_turn_text(tokenizer) -> tuple[str, str] | None:
    """(header, closing) of an assistant turn in the tokenizer's chat template, or None without a template.

    ChatML (SmolLM2, Qwen): ("<|im_start|>assistant\n", "<|im_end|>\n"). A policy stops generating at EOS
    ("<|im_end|>"), but the template closes the turn with more ("\n"), and rewardlab reads the reward at the end of the
    rendered turn, as it was trained. Text that ends at EOS gets the rest of the closing before it is scored.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    probe, marker = [{"role": "user", "content": "x"}], "\x00rewardlab\x00"
    try:
        opened = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        plain = tokenizer.apply_chat_template(probe, tokenize=False)
        full = tokenizer.apply_chat_template(probe + [{"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # a template that cannot render this probe: treat text as plain
        return None
    if not opened.startswith(plain) or marker not in full:
        return None
    return opened[len(plain) :], full[full.index(marker) + len(marker) :]


def closing_ids_after_eos(tokenizer) -> list[int]:
    """Token ids the chat template writes after EOS when it closes an assistant turn (ChatML: "\n" after <|im_end|>), or
    [] when EOS alone closes it (or there is no template). A policy stops at EOS; the reward model was trained on the
    template's rendering, which goes on, so its reward is read after these tokens."""
    turn = assistant_turn_text(tokenizer)
    eos = tokenizer.eos_token
    if turn is None or not eos or not turn[0] or not turn[1].startswith(eos) or turn[1] == eos:
        return []
    return list(tokenizer(turn[1][len(eos) :], add_special_tokens=False)["input_ids"])


def close_generated_turn(text: str, eos: str | None, turn: tuple[str, str] | None) -> str:
    """Complete a chat-rendered text that stops at EOS (as generations do) with the rest of the template's closing;
    `turn` is `assistant_turn_text(tokenizer)`. Text without the template's assistant header is left as it is."""
    if turn is None or not eos or not turn[0] or turn[0] not in text:
        return text
    closing = turn[1]
    if text.endswith(eos) and closing.startswith(eos) and not text.endswith(closing):
        return text + closing[len(eos) :]
    return text


def render_prompt(tokenizer, prompt: Text) -> str:
    """The text a policy is conditioned on when it generates a response to `prompt`."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return _plain_render(prompt, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: Text) -> list[int]:
    """Token ids of the rendered prompt (special tokens as the tokenizer adds them for plain strings)."""
    text = render_prompt(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"]


def response_start_from_offsets(offsets: list[tuple[int, int]], text_token: list[bool], prompt_chars: int) -> int:
    """Index of the first response token of a joined encoding: the first text token whose span ends after the prompt's
    `prompt_chars` characters (a token straddling the boundary is the response's). `text_token[i]` is False for tokens the
    tokenizer adds itself (BOS, EOS: no span): those before the text go with the prompt, those after it with the response.
    With an empty response, the response starts after the last text token."""
    for i, ((_, end), is_text) in enumerate(zip(offsets, text_token, strict=True)):
        if is_text and end > prompt_chars:
            return i
    last_text = max((i for i, is_text in enumerate(text_token) if is_text), default=None)
    return len(offsets) if last_text is None else last_text + 1


def _prompt_ids_without_suffix(tokenizer, prompt_text: str, add_special_tokens: bool) -> list[int]:
    """The prompt's own ids with the special tokens the tokenizer puts before a text (BOS), not those it puts after
    it (ByT5's EOS): those come after the response in the joined encoding."""
    plain = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    if not add_special_tokens:
        return plain
    full = list(tokenizer(prompt_text, add_special_tokens=True)["input_ids"])
    for before in range(len(full) - len(plain) + 1):
        if full[before : before + len(plain)] == plain:
            return full[: before + len(plain)]
    return full


def response_start_without_offsets(tokenizer, ids: list[int], prompt_text: str, add_special_tokens: bool) -> int:
    """The response start of a joined encoding `ids` for tokenizers without offsets (slow, Python tokenizers).

    When the joined ids begin with the prompt's own ids (the special tokens the tokenizer appends after a text aside),
    those are the prompt: exact. Otherwise the joined encoding re-segments the prompt's end: the response starts at the
    first token where the two depart, moved on over tokens whose decoded text (up to and including them) is still a
    prefix of the prompt's decoded text, so a token that straddles the boundary is the response's, as with offsets."""
    prompt_ids = _prompt_ids_without_suffix(tokenizer, prompt_text, add_special_tokens)
    start = 0
    while start < min(len(ids), len(prompt_ids)) and ids[start] == prompt_ids[start]:
        start += 1
    if start == len(prompt_ids):
        return start

    def decoded(token_ids: list[int]) -> str:
        return tokenizer.decode(token_ids, clean_up_tokenization_spaces=False)

    whole_prompt = decoded(prompt_ids)
    while start < len(ids):
        text = decoded(ids[: start + 1])
        complete = text.rstrip("\ufffd")
        if complete != text:  # ends inside a multi-byte character: the prompt's if the prompt goes on after `complete`
            inside = len(complete) < len(whole_prompt) and whole_prompt.startswith(complete)
        else:
            inside = whole_prompt.startswith(text)
        if not inside:
            break
        start += 1
    return start


def encode_joined(tokenizer, prompt_text: str, response_text: str, add_special_tokens: bool) -> EncodedSequence:
    """`prompt_text + response_text` tokenised as one text, and where the response starts (see the module docstring)."""
    text = prompt_text + response_text
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        text_token = [sequence is not None for sequence in enc.sequence_ids()]
        return EncodedSequence(ids, response_start_from_offsets(enc["offset_mapping"], text_token, len(prompt_text)))
    ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    return EncodedSequence(ids, response_start_without_offsets(tokenizer, ids, prompt_text, add_special_tokens))


def encode_prompt_response(
    tokenizer,
    prompt: Text,
    response: Text,
    max_length: int | None = None,
    truncation: Truncation = "keep_end",
) -> EncodedSequence | None:
    """Token ids of prompt + response and the response's start index; None when `truncation='drop'` applies."""
    prompt_text, response_text, append_eos = render_prompt_response(tokenizer, prompt, response)
    encoded = encode_joined(tokenizer, prompt_text, response_text, add_special_tokens=isinstance(prompt, str))
    eos = tokenizer.eos_token_id
    if append_eos and eos is not None and (encoded.response_start == len(encoded.input_ids) or encoded.input_ids[-1] != eos):
        encoded = EncodedSequence(encoded.input_ids + [eos], encoded.response_start)
    if max_length is None or len(encoded.input_ids) <= max_length:
        return encoded
    return None if truncation == "drop" else keep_end(encoded, max_length)


# What a checkpoint's tokenizer made of two fixed (prompt, response) pairs when the checkpoint was saved, so that a later
# change of the text convention (an edited chat template, another EOS) can be told apart from what training saw.
TEXT_RECORD_NAME = "text_convention.json"
RECORD_PROBES: dict[str, tuple[Text, Text]] = {
    "chat": ([{"role": "user", "content": "Is 7 a prime?"}], [{"role": "assistant", "content": "Yes, 7 is prime."}]),
    "plain": ("Is 7 a prime?", " Yes, 7 is prime."),
}


def text_record(tokenizer) -> dict:
    """{"probes": {kind: {"prompt", "response", "input_ids"}}}: RECORD_PROBES as `encode_prompt_response` encodes them
    with this tokenizer (the chat probe only with a chat template; a probe the tokenizer cannot encode is left out)."""
    probes = {}
    for kind, (prompt, response) in RECORD_PROBES.items():
        if kind == "chat" and not getattr(tokenizer, "chat_template", None):
            continue
        try:
            ids = encode_prompt_response(tokenizer, prompt, response).input_ids
        except Exception:  # a template that cannot render the probe: nothing to record for it
            continue
        probes[kind] = {"prompt": prompt, "response": response, "input_ids": list(ids)}
    return {"format_version": 1, "probes": probes}


def pad_sequences(
    sequences: list[EncodedSequence], pad_id: int, padding_side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad to a (B, T) batch. Returns input_ids, attention_mask and response_start (indices in the padded tensor)."""
    input_ids, attention_mask = pad_rows([s.input_ids for s in sequences], pad_id, padding_side)
    offsets = [input_ids.shape[1] - len(s.input_ids) if padding_side == "left" else 0 for s in sequences]
    response_start = torch.tensor([offset + s.response_start for offset, s in zip(offsets, sequences, strict=True)])
    return input_ids, attention_mask, response_start.long()

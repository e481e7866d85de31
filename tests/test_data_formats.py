from __future__ import annotations

import copy

import pytest

from rewardlab.data.errors import DataError
from rewardlab.data.formats import (
    ADAPTERS,
    FORMATS,
    detect_format,
    from_hh,
    from_hhh,
    from_mt_bench_human,
    from_rewardbench,
    from_trl,
    from_unified_feedback,
    get_adapter,
    parse_hh_transcript,
    split_shared_prefix,
)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


TRL = {"prompt": "Q?", "chosen": " yes", "rejected": " no"}
TRL_CONV = {"prompt": [user("Q?")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}
HH = {"chosen": "\n\nHuman: Q?\n\nAssistant: yes", "rejected": "\n\nHuman: Q?\n\nAssistant: no"}
UF = {
    "conv_A": [user("Q?"), assistant("yes")],
    "conv_B": [user("Q?"), assistant("no")],
    "conv_A_rating": 7,
    "conv_B_rating": 4.5,
    "source": "sharegpt",
}
HHH = {"input": "Q?", "targets": {"choices": ["yes", "no"], "labels": [1, 0]}}
MT = {
    "question_id": 81,
    "model_a": "m1",
    "model_b": "m2",
    "winner": "model_a",
    "judge": "expert_0",
    "conversation_a": [user("Q?"), assistant("yes")],
    "conversation_b": [user("Q?"), assistant("no")],
    "turn": 1,
}
RB = {"prompt": "Q?", "chosen": "yes", "rejected": "no", "subset": "hep-go", "id": 3}
VALID = {"trl": TRL, "hh": HH, "unified-feedback": UF, "hhh": HHH, "mt-bench-human": MT, "rewardbench": RB}


def with_changes(record: dict, **changes) -> dict:
    out = copy.deepcopy(record)
    for key, value in changes.items():
        if value is DELETE:
            del out[key]
        else:
            out[key] = value
    return out


DELETE = object()


# ----------------------------------------------------------------------------------------------------------------------
# detection


@pytest.mark.parametrize("fmt", FORMATS)
def test_detect_each_format(fmt):
    assert detect_format(VALID[fmt]) == fmt


def test_detect_trl_conversational_and_implicit():
    assert detect_format(TRL_CONV) == "trl"
    assert detect_format({"chosen": "The sky is blue.", "rejected": "The sky is green."}) == "trl"


def test_detect_unknown_lists_fields():
    with pytest.raises(DataError, match=r"cannot detect.*\(answer, question\)"):
        detect_format({"question": "q", "answer": "a"})


def test_unknown_format_name():
    with pytest.raises(DataError, match="unknown data format 'dpo'"):
        get_adapter("dpo")
    assert set(ADAPTERS) == set(FORMATS)


# ----------------------------------------------------------------------------------------------------------------------
# trl


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        # the first difference is inside "42" / "420": back off to before the word
        ("Q: 6*7? A: 42.", "Q: 6*7? A: 420.", ("Q: 6*7? A:", " 42.", " 420.")),
        # chosen is a prefix of rejected: the last shared word must stay in both responses
        ("The sky is blue", "The sky is blue and wide", ("The sky is", " blue", " blue and wide")),
        # differing whitespace right at the boundary is fine; the run of whitespace goes to the responses
        ("Answer:\n\nyes", "Answer:  no", ("Answer:", "\n\nyes", "  no")),
        # no whole shared word
        ("Yes it is", "Yeah", ("", "Yes it is", "Yeah")),
    ],
)
def test_split_shared_prefix(chosen, rejected, expected):
    prompt, chosen_rest, rejected_rest = split_shared_prefix(chosen, rejected)
    assert (prompt, chosen_rest, rejected_rest) == expected
    assert prompt + chosen_rest == chosen and prompt + rejected_rest == rejected


def test_trl_explicit_standard_with_margin():
    ex = from_trl({**TRL, "margin": "1.5", "source": "s", "subset": "x", "id": 9})  # csv cells are strings
    assert (ex.prompt, ex.chosen, ex.rejected, ex.margin, ex.source, ex.subset) == ("Q?", " yes", " no", 1.5, "s", "x")
    assert ex.metadata == {"id": 9}


def test_trl_implicit_standard():
    ex = from_trl({"chosen": "Is water wet? Yes, it is.", "rejected": "Is water wet? Yesterday it was."})
    assert (ex.prompt, ex.chosen, ex.rejected) == ("Is water wet?", " Yes, it is.", " Yesterday it was.")
    assert not ex.is_conversational


def test_trl_implicit_without_shared_words():
    with pytest.raises(DataError, match="share no leading words") as err:
        from_trl({"chosen": "Yes.", "rejected": "No."})
    assert err.value.field == "chosen"


def test_trl_explicit_conversational_keeps_only_role_and_content():
    record = with_changes(TRL_CONV, chosen=[{"role": "assistant", "content": "yes", "name": "bot"}])
    ex = from_trl(record)
    assert ex.is_conversational
    assert ex.prompt == [user("Q?")] and ex.chosen == [assistant("yes")] and ex.rejected == [assistant("no")]


def test_trl_implicit_conversational_multi_turn():
    shared = [{"role": "system", "content": "Be brief."}, user("2+2?"), assistant("4"), user("3+3?")]
    ex = from_trl({"chosen": [*shared, assistant("6")], "rejected": [*shared, assistant("7"), user("ok?")]})
    assert ex.prompt == shared
    assert ex.chosen == [assistant("6")]
    assert ex.rejected == [assistant("7"), user("ok?")]


def test_trl_conversational_response_must_start_with_assistant():
    with pytest.raises(DataError, match="must start with an assistant message") as err:
        from_trl({"chosen": [user("a"), assistant("b")], "rejected": [user("c"), assistant("b")]})
    assert err.value.field == "chosen"


def test_trl_mixed_kinds_rejected():
    with pytest.raises(DataError, match="expected a list of messages") as err:
        from_trl(with_changes(TRL_CONV, prompt="Q?"))
    assert err.value.field == "prompt"


def test_trl_bad_role():
    with pytest.raises(DataError, match="role must be one of") as err:
        from_trl(with_changes(TRL_CONV, rejected=[{"role": "gpt", "content": "no"}]))
    assert err.value.field == "rejected"


# ----------------------------------------------------------------------------------------------------------------------
# hh


def test_parse_hh_strips_exactly_one_leading_space():
    messages = parse_hh_transcript("\n\nHuman:  two spaces\n\nAssistant: a\nb ", "chosen")
    assert messages == [user(" two spaces"), assistant("a\nb ")]


def test_hh_multi_turn():
    shared = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?"
    ex = from_hh({"chosen": shared + "\n\nAssistant: Knock knock.", "rejected": shared + "\n\nAssistant: No."})
    assert ex.prompt == [user("Hi"), assistant("Hello!"), user("Joke?")]
    assert ex.chosen == [assistant("Knock knock.")] and ex.rejected == [assistant("No.")]


def test_hh_dialogues_with_different_first_questions_are_invalid():
    record = {"chosen": "\n\nHuman: Hi\n\nAssistant: yes", "rejected": "\n\nHuman: Hey\n\nAssistant: no"}
    with pytest.raises(DataError, match="no shared prompt") as err:
        from_hh(record)
    assert err.value.field == "rejected"


def test_hh_dialogues_diverging_at_an_earlier_answer_compare_their_tails():
    # as in the real harmless-base test file (line 1255): an earlier Assistant turn differs, then everything after it
    chosen = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: a2"
    rejected = "\n\nHuman: q1\n\nAssistant: b1"
    ex = from_hh({"chosen": chosen, "rejected": rejected})
    assert ex.prompt == [user("q1")]
    assert ex.chosen == [assistant("a1"), user("q2"), assistant("a2")] and ex.rejected == [assistant("b1")]


def test_hh_dialogues_diverging_at_a_human_turn_back_off_to_the_shared_answer():
    # the Human turns differ, so the responses start at the last shared Assistant turn: both start with an answer
    chosen = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: a2"
    rejected = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: other\n\nAssistant: b2"
    ex = from_hh({"chosen": chosen, "rejected": rejected})
    assert ex.prompt == [user("q1")]
    assert ex.chosen == [assistant("a1"), user("q2"), assistant("a2")]
    assert ex.rejected == [assistant("a1"), user("other"), assistant("b2")]
    assert ex.prompt + ex.chosen == parse_hh_transcript(chosen, "chosen")


def test_empty_answers_are_scored_not_rejected():
    # harmless-base test line 87: the chosen final answer is empty
    ex = from_hh({"chosen": "\n\nHuman: Address?\n\nAssistant: ", "rejected": "\n\nHuman: Address?\n\nAssistant: Sure, it is"})
    assert ex.chosen == [assistant("")] and ex.rejected == [assistant("Sure, it is")]
    assert from_trl(with_changes(TRL, chosen=" \n")).chosen == " \n"
    assert from_trl(with_changes(TRL_CONV, chosen=[assistant("")])).chosen == [assistant("")]
    assert from_rewardbench(with_changes(RB, rejected="")).rejected == [assistant("")]
    assert from_hhh({"input": "Q?", "targets": {"choices": ["yes", ""], "labels": [1, 0]}}).rejected == [assistant("")]


def test_hh_must_end_with_assistant():
    with pytest.raises(DataError, match="end with an Assistant turn") as err:
        from_hh({"chosen": "\n\nHuman: Q?\n\nAssistant: a\n\nHuman: more?", "rejected": HH["rejected"]})
    assert err.value.field == "chosen"


def test_hh_not_a_transcript():
    with pytest.raises(DataError, match="not an HH transcript"):
        from_hh({"chosen": "just text", "rejected": "other text"})


# ----------------------------------------------------------------------------------------------------------------------
# unified-feedback


def test_unified_feedback_higher_rating_is_chosen():
    ex = from_unified_feedback(with_changes(UF, conv_A_rating=2, conv_B_rating=9))
    assert ex.chosen == [assistant("no")] and ex.rejected == [assistant("yes")]
    assert ex.margin == 7.0
    assert ex.prompt == [user("Q?")] and ex.source == "sharegpt"
    ex = from_unified_feedback(UF)
    assert ex.chosen == [assistant("yes")] and ex.margin == 2.5


def test_unified_feedback_tie_excluded():
    assert from_unified_feedback(with_changes(UF, conv_A_rating=5, conv_B_rating=5.0)) is None


def test_unified_feedback_different_questions():
    with pytest.raises(DataError, match="no shared prompt") as err:
        from_unified_feedback(with_changes(UF, conv_B=[user("Other?"), assistant("no")]))
    assert err.value.field == "conv_B"


def test_unified_feedback_multi_turn_with_different_earlier_answers():
    # Chatbot Arena style: both models answered both turns, so each response is the model's whole tail
    conv_a = [user("q1"), assistant("a1"), user("q2"), assistant("a2")]
    conv_b = [user("q1"), assistant("b1"), user("q2"), assistant("b2")]
    ex = from_unified_feedback(with_changes(UF, conv_A=conv_a, conv_B=conv_b))
    assert ex.prompt == [user("q1")]
    assert ex.chosen == conv_a[1:] and ex.rejected == conv_b[1:]
    assert ex.prompt + ex.chosen == conv_a and ex.prompt + ex.rejected == conv_b


def test_unified_feedback_conversations_diverging_at_a_user_turn():
    conv_a = [user("Q?"), assistant("yes"), user("sure?"), assistant("ok")]
    conv_b = [user("Q?"), assistant("yes"), user("really?"), assistant("no")]
    ex = from_unified_feedback(with_changes(UF, conv_A=conv_a, conv_B=conv_b))
    assert ex.prompt == [user("Q?")] and ex.chosen == conv_a[1:] and ex.rejected == conv_b[1:]
    with pytest.raises(DataError, match="must end with an assistant message") as err:
        from_unified_feedback(with_changes(UF, conv_B=[user("Q?")]))
    assert err.value.field == "conv_B"


# ----------------------------------------------------------------------------------------------------------------------
# hhh


def test_hhh_argmax_argmin():
    record = {"input": "Q?", "targets": {"choices": ["bad", "best", "ok"], "labels": [0, 2, 1]}, "subset": "honest"}
    ex = from_hhh(record)
    assert ex.prompt == [user("Q?")]
    assert ex.chosen == [assistant("best")] and ex.rejected == [assistant("bad")]
    assert ex.subset == "honest"


def test_hhh_all_labels_equal_is_excluded():
    assert from_hhh({"input": "Q?", "targets": {"choices": ["a", "b"], "labels": [1, 1]}}) is None


def test_hhh_label_count_mismatch():
    with pytest.raises(DataError, match="one label each") as err:
        from_hhh({"input": "Q?", "targets": {"choices": ["a", "b"], "labels": [1]}})
    assert err.value.field == "targets"


# ----------------------------------------------------------------------------------------------------------------------
# mt-bench-human


def test_mt_bench_winner_model_b():
    ex = from_mt_bench_human(with_changes(MT, winner="model_b"))
    assert ex.chosen == [assistant("no")] and ex.rejected == [assistant("yes")]
    assert ex.metadata == {
        "question_id": 81,
        "judge": "expert_0",
        "turn": 1,
        "chosen_model": "m2",
        "rejected_model": "m1",
    }


@pytest.mark.parametrize("tie", ["tie", "tie (bothbad)"])
def test_mt_bench_ties_are_excluded_not_counted_for_model_b(tie):
    assert from_mt_bench_human(with_changes(MT, winner=tie)) is None


def test_mt_bench_unknown_winner():
    with pytest.raises(DataError, match="expected one of model_a") as err:
        from_mt_bench_human(with_changes(MT, winner="model_c"))
    assert err.value.field == "winner"


def test_mt_bench_turn_cuts_conversations():
    # as in the real data: each model answered both turns, and `turn` says which one was judged
    conv_a = [user("q1"), assistant("a1"), user("q2"), assistant("a2")]
    conv_b = [user("q1"), assistant("b1"), user("q2"), assistant("b2")]
    turn1 = from_mt_bench_human(with_changes(MT, conversation_a=conv_a, conversation_b=conv_b, turn=1))
    assert turn1.prompt == [user("q1")]
    assert turn1.chosen == [assistant("a1")] and turn1.rejected == [assistant("b1")]
    # turn 2 judged whole conversations: prompt + response is each model's full conversation
    turn2 = from_mt_bench_human(with_changes(MT, conversation_a=conv_a, conversation_b=conv_b, turn=2, winner="model_b"))
    assert turn2.prompt == [user("q1")]
    assert turn2.chosen == conv_b[1:] and turn2.rejected == conv_a[1:]
    # when the first answers agree, they belong to the prompt
    conv_b_same_start = [*conv_a[:3], assistant("b2")]
    turn2 = from_mt_bench_human(with_changes(MT, conversation_a=conv_a, conversation_b=conv_b_same_start, turn=2))
    assert turn2.prompt == conv_a[:3]
    assert turn2.chosen == [assistant("a2")] and turn2.rejected == [assistant("b2")]


def test_mt_bench_turn_beyond_conversation():
    with pytest.raises(DataError, match="only 1 assistant message") as err:
        from_mt_bench_human(with_changes(MT, turn=2))
    assert err.value.field == "conversation_a"


# ----------------------------------------------------------------------------------------------------------------------
# rewardbench


def test_rewardbench_is_conversational_with_subset():
    ex = from_rewardbench(RB)
    assert ex.prompt == [user("Q?")] and ex.chosen == [assistant("yes")] and ex.rejected == [assistant("no")]
    assert ex.subset == "hep-go" and ex.metadata == {"id": 3}


# ----------------------------------------------------------------------------------------------------------------------
# validation shared by every adapter: (format, changes, field, message)

HH_EMPTY = "\n\nHuman: Q?\n\nAssistant:  "
CASES = [
    # missing field
    ("trl", {"chosen": DELETE}, "chosen", "missing field"),
    ("hh", {"rejected": DELETE}, "rejected", "missing field"),
    ("unified-feedback", {"conv_B_rating": DELETE}, "conv_B_rating", "missing field"),
    ("hhh", {"targets": DELETE}, "targets", "missing field"),
    ("mt-bench-human", {"conversation_b": None}, "conversation_b", "missing field"),  # null column = missing
    ("rewardbench", {"subset": DELETE}, "subset", "missing field"),
    # wrong type
    ("trl", {"chosen": 5}, "chosen", "expected a string"),
    ("hh", {"chosen": ["x"]}, "chosen", "expected a string"),
    ("unified-feedback", {"conv_A_rating": "high"}, "conv_A_rating", "expected a number"),
    ("unified-feedback", {"conv_A": "Q? yes"}, "conv_A", "expected a list of messages"),
    ("hhh", {"input": 3}, "input", "expected a string"),
    ("mt-bench-human", {"turn": "two"}, "turn", "expected a positive integer"),
    ("mt-bench-human", {"conversation_a": [{"role": "user", "content": 1}]}, "conversation_a", "content must be"),
    ("rewardbench", {"chosen": ["yes"]}, "chosen", "expected a string"),
    # no response at all (an empty answer is fine: an empty list of messages is not)
    ("trl", {"prompt": [user("Q?")], "chosen": [], "rejected": [assistant("no")]}, "chosen", "no response"),
    # identical empty answers
    ("hh", {"chosen": HH_EMPTY, "rejected": HH_EMPTY}, "rejected", "identical to chosen"),
    # identical responses
    ("trl", {"rejected": " yes"}, "rejected", "identical to chosen"),
    ("trl", {"prompt": DELETE, "chosen": "same", "rejected": "same"}, "rejected", "identical to chosen"),
    ("hh", {"rejected": HH["chosen"]}, "rejected", "identical to chosen"),
    ("unified-feedback", {"conv_B": [user("Q?"), assistant("yes")]}, "conv_B", "identical to chosen"),
    ("hhh", {"targets": {"choices": ["yes", "yes"], "labels": [1, 0]}}, "targets", "identical to chosen"),
    ("mt-bench-human", {"conversation_b": [user("Q?"), assistant("yes")]}, "conversation_b", "identical to chosen"),
    ("rewardbench", {"rejected": "yes"}, "rejected", "identical to chosen"),
]


@pytest.mark.parametrize(("fmt", "changes", "field", "message"), CASES)
def test_validation(fmt, changes, field, message):
    record = with_changes(VALID[fmt], **changes)
    with pytest.raises(DataError, match=message) as err:
        ADAPTERS[fmt](record)
    assert err.value.field == field


def test_conversational_trl_validation():
    with pytest.raises(DataError, match="identical to chosen") as err:
        from_trl(with_changes(TRL_CONV, rejected=[assistant("yes")]))
    assert err.value.field == "rejected"

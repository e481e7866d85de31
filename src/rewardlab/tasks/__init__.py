"""rewardlab's embedded world: symbol tasks with a programmatic gold reward, so the whole RLHF loop runs offline.

Prompts ask for one of six task families (copy, reverse, sort, rotate, dedup, shift) on short single-character symbol
strings (letters a-h: one byte-tokenizer token each), phrased in one of four styles ("reverse: dbca",
"please reverse dbca", "dbca -> reverse", "what is reverse of dbca?"). The gold reward is the share of answer positions
the response gets right, over the longer of response and answer: a sum of per-token right/wrong terms in [0, 1].
Families and styles are split: reward models are trained on preferences from ID families (copy, reverse, sort, rotate) in
ID styles (colon, please) only; test_ood holds every pair with an OOD family (dedup, shift) or an OOD style (arrow,
question). The base policy, a tiny Llama pretrained here in a few minutes on deliberately noisy demonstrations of ALL
pairs, knows the OOD tasks but a reward model never sees them graded: that is the gap GRM's regulariser should help
bridge. Preference pairs are two base-policy samples labelled by a Bradley-Terry draw on the gold reward, with optional
symmetric label noise. Everything is seeded.

World version 4 (the default; `rewardlab.tasks.world.WORLDS`) adds a rating token right after every pretraining answer's
end token (so the position a reward model reads is trained to carry quality) and an ID-only style-cue shortcut in the
preference data; world 3 stays selectable.

Modules: `world` (tasks, splits, `GoldReward`), `policy` (`get_base_policy`, `evaluate_gold`; the step policy:
`get_step_policy`, `evaluate_steps`), `preferences` (`make_preference_data`, `write_preference_data`, `write_prompts`),
`easy` (`easy_preferences`, no policy needed),
`steps` (chains of operations answered one step a line, with gold step labels for process reward models:
`gold_step_labels`, `first_error`, `make_step_data`, `write_step_data`, `sample_step_solutions`; no policy needed).
"""

from rewardlab.tasks.easy import easy_preferences
from rewardlab.tasks.world import (
    FAMILIES,
    ID_FAMILIES,
    ID_STYLES,
    OOD_FAMILIES,
    OOD_STYLES,
    STYLES,
    GoldReward,
    TaskInstance,
    gold_score,
    gold_token_scores,
    make_prompts,
    make_tasks,
    parse_prompt,
)

__all__ = [
    "FAMILIES",
    "ID_FAMILIES",
    "ID_STYLES",
    "OOD_FAMILIES",
    "OOD_STYLES",
    "STYLES",
    "GoldReward",
    "TaskInstance",
    "easy_preferences",
    "gold_score",
    "gold_token_scores",
    "make_prompts",
    "make_tasks",
    "parse_prompt",
]

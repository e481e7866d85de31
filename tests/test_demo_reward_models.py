"""The demo's reward-model step end to end on tiny-llama and a few world pairs: every variant's OOD split (from the
scores its training wrote, nothing scored again), the world check's probes and the check on cue-neutral pairs."""

from __future__ import annotations

import json
import time

import pytest

from rewardlab.data.loading import preference_to_dict
from rewardlab.data.types import PreferenceExample
from rewardlab.demo.config import FROZEN, VARIANTS, DemoConfig
from rewardlab.demo.report import render_ood_split, render_world_check
from rewardlab.demo.reward_models import LIKELIHOOD_JUDGE, PROBE_AFTER_VANILLA, rm_run_name, train_reward_models
from rewardlab.ood_split import CUE_CELLS, KINDS, pair_cells
from rewardlab.runtime import write_jsonl
from rewardlab.tasks.world import make_tasks

pytestmark = pytest.mark.usefixtures("one_thread")

CUES = [(True, False), (False, True), (True, True), (False, False)]  # chosen_only, rejected_only, neutral, neutral


def world_pairs(split: str, n: int, seed: int) -> list[dict]:
    """Pairs of the split's tasks: the answer against a wrong one (its last symbol dropped), the cue placed in turn on
    the chosen response, the rejected one, both and neither."""
    rows = []
    for i, task in enumerate(make_tasks(split, n, seed)):
        cue_chosen, cue_rejected = CUES[i % 4]
        chosen, rejected = task.answer + "." * cue_chosen, task.answer[:-1] + "." * cue_rejected
        example = PreferenceExample(
            prompt=task.messages,
            chosen=[{"role": "assistant", "content": chosen}],
            rejected=[{"role": "assistant", "content": rejected}],
            source=task.family,
            subset=task.subset,
        )
        rows.append(preference_to_dict(example))
    return rows


def test_the_demo_reward_models_report_the_ood_split_of_every_model(tmp_path):
    paths = {}
    for name, split, n, seed in [
        ("train_small", "train", 16, 0),
        ("train_large", "train", 32, 0),
        ("val_id", "train", 16, 1),
        ("test_id", "test_id", 12, 2),
        ("test_ood", "test_ood", 40, 3),
    ]:
        paths[name] = tmp_path / "data" / f"{name}.jsonl"
        write_jsonl(paths[name], world_pairs(split, n, seed))
    cfg = DemoConfig(
        output_dir=str(tmp_path / "demo"), seeds=1, sizes={"small": 16, "large": 32}, rm_epochs=1, rm_eval_pairs=16,
        rm_batch_size=8, official_pairing=False, progress=False, workers=2, curve_sizes=("small",),
    )  # fmt: skip
    start = time.perf_counter()
    results = train_reward_models(cfg, "tiny-llama", paths, tmp_path / "demo")
    seconds = time.perf_counter() - start

    split = results["ood_split"]
    assert list(split) == [*VARIANTS, FROZEN, PROBE_AFTER_VANILLA, LIKELIHOOD_JUDGE]
    ood = [PreferenceExample(**{k: v for k, v in r.items() if k != "source"}) for r in world_pairs("test_ood", 40, 3)]
    cells = pair_cells(ood)
    for name, per_size in split.items():
        for size, entry in per_size.items():
            assert len(entry["per_seed"]) == (1 if name != PROBE_AFTER_VANILLA else cfg.seeds)
            mean = entry["mean"]
            counts = {(c, k): mean[c][k]["n"] for c in CUE_CELLS for k in KINDS}
            assert sum(counts.values()) == len(ood) == mean["all"]["all"]["n"]  # the cells cover the OOD set once
            assert counts == {(c, k): cells.count((c, k)) for c in CUE_CELLS for k in KINDS}
            if name in VARIANTS:  # the split's total is the model's own OOD accuracy from its metrics
                assert mean["all"]["all"]["accuracy"] == pytest.approx(results["reward_models"][name][size]["ood"]["mean"])
    frozen = results["reward_models"][FROZEN]["large"]["ood"]["mean"]
    check = results["world_check"]

    def total(name: str) -> float:
        return split[name]["large"]["mean"]["all"]["all"]["accuracy"]

    assert total(FROZEN) == pytest.approx(frozen)
    assert check["probe_ood_after_vanilla"] == pytest.approx(total(PROBE_AFTER_VANILLA))
    assert check["likelihood_judge_ood"] == pytest.approx(total(LIKELIHOOD_JUDGE))

    neutral = check["neutral"]
    assert neutral["n"] == sum(cells.count(("neutral", k)) for k in KINDS) == 20
    assert neutral["vanilla_ood"] == pytest.approx(split["vanilla"]["large"]["mean"]["neutral"]["all"]["accuracy"])
    assert neutral["probe_ood_base"] == pytest.approx(split[FROZEN]["large"]["mean"]["neutral"]["all"]["accuracy"])
    assert set(neutral["conditions"]) == {"base_features_good", "vanilla_damages_features"}
    assert isinstance(check["probe_l2_on_edge"], bool)

    scores = [json.loads(line) for line in (tmp_path / "demo" / "rm" / "vanilla-large-s0" / "scores.jsonl").open()]
    assert {r["dataset"] for r in scores} == {"val", "id", "ood"} and sum(r["dataset"] == "ood" for r in scores) == 40

    # every variant against vanilla, paired by seed, each entry what `rewardlab compare` computes on the same scores files
    from rewardlab.comparison import Side, compare_sides, read_scores

    entries = {(c["variant"], c["size"], c["eval_set"]): c for c in results["comparisons"]}
    assert set(entries) == {(v, s, e) for v in VARIANTS if v != "vanilla" for s in cfg.sizes for e in ("id", "ood")}
    assert results["comparisons_family"]["size"] == len(entries)
    dirs = results["reward_model_dirs"]
    grm, van = (Side(n, (str(tmp_path / "demo" / dirs[n]["large"][0] / "scores.jsonl"),)) for n in ("grm-sft", "vanilla"))
    [(_, direct)] = compare_sides(grm, [read_scores(grm.sources[0])], van, [read_scores(van.sources[0])], dataset="ood")
    entry = entries[("grm-sft", "large", "ood")]
    for key in ("diff", "ci_low", "ci_high", "n_pairs", "n_seeds", "p_mcnemar", "verdict"):
        assert entry[key] == direct.as_dict()[key], key
    assert entry["p_holm"] >= entry["p_mcnemar"]
    assert entry["verdict_holm"] in ("better", "worse", "not distinguishable at this size")

    # the alpha curve: every GRM variant at every alpha, each point its run's own accuracy; the headline keeps the alpha
    # with the best val_id accuracy, read back here from each run's metrics.json
    curve, selection = results["alpha_curve"], results["alpha_selection"]
    for variant in ("grm-sft", "grm-dpo", "grm-dpo-noref"):
        for size in cfg.sizes:
            val = {}
            for alpha in cfg.alphas_at(size):
                run_dir = tmp_path / "demo" / "rm" / rm_run_name(variant, size, 0, alpha)
                metrics = json.loads((run_dir / "metrics.json").read_text())
                val[alpha] = metrics["eval"]["val"]["accuracy"]
                for eval_set in ("val", "id", "ood"):
                    [point] = [p for p in curve[variant][size][eval_set] if p["alpha"] == alpha]
                    assert point["mean"] == pytest.approx(metrics["eval"][eval_set]["accuracy"])
            assert [p["alpha"] for p in curve[variant][size]["ood"]] == sorted(cfg.alphas_at(size))
            best = max(val.values())
            assert val[selection[variant][size]["alpha"]] == best
            kept = results["reward_models"][variant][size]
            assert kept["alpha"] == selection[variant][size]["alpha"]
            assert dirs[variant][size] == [f"rm/{rm_run_name(variant, size, 0, kept['alpha'])}"]
    assert len(cfg.alphas_at("small")) >= 3 and cfg.alphas_at("large") == (0.01,)  # the curve at the small size only
    assert selection["grm-sft"]["large"]["rule"].startswith("no curve")
    # the curve read with statistics: each point against vanilla, what `rewardlab compare` computes on the same files
    along = {(c["variant"], c["alpha"], c["size"], c["eval_set"]): c for c in results["alpha_comparisons"]}
    grm = ("grm-sft", "grm-dpo", "grm-dpo-noref")
    assert set(along) == {(v, a, "small", e) for v in grm for a in cfg.alphas for e in ("id", "ood")}
    assert results["alpha_comparisons_family"]["size"] == len(along)
    point = Side("p", (str(tmp_path / "demo" / "rm" / rm_run_name("grm-dpo", "small", 0, 0.1) / "scores.jsonl"),))
    base = Side("v", (str(tmp_path / "demo" / "rm" / "vanilla-small-s0" / "scores.jsonl"),))
    [(_, direct)] = compare_sides(point, [read_scores(point.sources[0])], base, [read_scores(base.sources[0])], dataset="ood")
    assert along[("grm-dpo", 0.1, "small", "ood")]["diff"] == direct.as_dict()["diff"]
    assert (tmp_path / "demo" / "rm" / "vanilla-large-s0").is_dir()

    report = "\n".join(render_world_check(check) + render_ood_split(split))
    assert "cue-neutral OOD pairs" in report and "| pairs |" in report and "rejected_only / new_family" in report
    assert seconds < 300

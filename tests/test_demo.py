"""The demo's report logic: every sentence is computed from the run's numbers (flip the numbers, flip the verdict)."""

import pytest

from rewardlab.demo import (
    PPO_COMPARISONS,
    VARIANTS,
    DemoConfig,
    coincidence,
    findings,
    ppo_findings,
    render_report,
    summarise_ppo,
    summarise_ppo_comparisons,
)


def cell(id_acc, ood_acc):
    three_seeds = 3  # with_spread shows "± std" over several seeds only
    return {
        "id": {"mean": id_acc, "std": 0.01, "values": [id_acc] * three_seeds},
        "ood": {"mean": ood_acc, "std": 0.02, "values": [ood_acc] * three_seeds},
    }


def ppo_log(final: float, start: float = 0.3, kl: float = 0.1, evals: bool = False) -> list[dict]:
    """Training rows at steps 0-3 (gold from `start` to `final`, KL = kl * step); with `evals`, held-out eval rows at
    steps 0, 2, 3 on the same line."""
    rows = [{"step": s, "gold_reward": start + (final - start) * s / 3, "kl": kl * s, "proxy_reward": s} for s in range(4)]
    held_out = [{"kind": "eval", "n_prompts": 16, **{k: v for k, v in rows[s].items()}} for s in (0, 2, 3)]
    return rows + held_out if evals else rows


def fake_ppo(r3hf_final: float, seeds: int = 1, offset_gap: float = 0.0) -> dict:
    """Comparison logs: in the verdict comparisons sparse and the baseline end at 0.4 and r3hf at `r3hf_final` (+ 0.01
    per seed), on the training rollouts and the held-out checkpoints alike; the equivalence comparison's r3hf differs
    from sparse by `offset_gap` from step 2."""
    logs = {}
    for comparison in PPO_COMPARISONS:
        if comparison.kind == "verdict":
            logs[comparison.name] = {
                "sparse": [ppo_log(0.4 + 0.01 * k, evals=True) for k in range(seeds)],
                "r3hf": [ppo_log(r3hf_final + 0.01 * k, evals=True) for k in range(seeds)],
                "baseline": [ppo_log(0.4 + 0.01 * k, evals=True) for k in range(seeds)],
            }
        else:
            gapped = [r | {"gold_reward": r["gold_reward"] + (offset_gap if r["step"] >= 2 else 0.0)} for r in ppo_log(0.4)]
            logs[comparison.name] = {"sparse": [ppo_log(0.4)], "r3hf": [gapped]}
    return summarise_ppo_comparisons(logs)


def fake_results(grm_ood: float, r3hf_final: float, grm_bon_end: float, seeds: int = 1) -> dict:
    table = {v: {"small": cell(0.7, 0.6), "large": cell(0.75, 0.62)} for v in VARIANTS}
    table["grm-sft"]["small"] = cell(0.71, grm_ood)
    ppo = fake_ppo(r3hf_final, seeds)
    curves = {
        "vanilla": {"gold": [0.3, 0.35, 0.33]},
        "grm-sft": {"gold": [0.3, 0.34, 0.3 + grm_bon_end]},
    }
    return {
        "config": vars(DemoConfig.make(quick=True)),
        "base_policy": {"gold_id": {"mean_gold": 0.3}, "gold_ood": {"mean_gold": 0.2}},
        "reward_models": table,
        "bon": {"curves": curves},
        "ppo": ppo,
        "timings_seconds": {"total": 1.0},
    }


def test_findings_follow_the_numbers():
    good = fake_results(grm_ood=0.7, r3hf_final=0.6, grm_bon_end=0.1)
    lines = findings(good)
    sft_small = next(x for x in lines if x.startswith("small data: grm-sft"))
    assert "OOD +10.0 points" in sft_small and "(agrees with" in sft_small
    assert "agrees with GRM's claim of less over-optimisation" in " ".join(lines)
    assert "agrees with R3HF" not in " ".join(lines)  # one PPO seed: no interval, no verdict
    assert "one seed: not distinguishable at this size; no verdict on R3HF" in " ".join(lines)
    assert "agrees with R3HF's claim that dense rewards learn faster" in " ".join(findings(fake_results(0.7, 0.6, 0.1, seeds=3)))

    bad = fake_results(grm_ood=0.5, r3hf_final=0.35, grm_bon_end=0.0)
    lines = findings(bad)
    sft_small = next(x for x in lines if x.startswith("small data: grm-sft"))
    assert "OOD -10.0 points" in sft_small and "contradicts" in sft_small
    assert "contradicts GRM's claim of less over-optimisation" in " ".join(lines)
    assert "contradicts R3HF" in " ".join(findings(fake_results(0.5, 0.35, 0.0, seeds=3)))


def test_a_difference_within_the_noise_is_no_agreement():
    lines = findings(fake_results(grm_ood=0.6004, r3hf_final=0.4005, grm_bon_end=0.035))
    assert all("agrees with" not in line for line in lines)
    assert sum("no clear difference" in line for line in lines) >= 3


def test_ppo_summary_uses_the_last_quarter_and_report_renders():
    summary = summarise_ppo({"sparse": [[{"gold_reward": g, "kl": 0.0, "proxy_reward": 0.0} for g in (0.1, 0.2, 0.3, 0.5)]]})
    assert summary["sparse"]["gold_initial"]["mean"] == 0.1
    assert summary["sparse"]["gold_final"]["mean"] == 0.5  # last quarter of 4 steps = the last step
    assert abs(summary["sparse"]["gold_gain"]["mean"] - 0.4) < 1e-12
    results = fake_results(0.7, 0.6, 0.1)
    results["findings"] = findings(results)
    report = render_report(results)
    assert "| grm-sft | 0.710 ± 0.010 | 0.700 ± 0.020 |" in report
    assert "rm_accuracy.png" in report and "ppo_gold.png" in report
    for comparison in PPO_COMPARISONS:
        for shaping, critic in comparison.arms:
            assert f"| {comparison.name} | {comparison.algo} | {shaping} | {critic or 'none'} |" in report
        if comparison.kind == "verdict":
            assert f"| {comparison.name} | ppo | sparse | reward-model |" in report  # the baseline users run
            assert f"| {comparison.name} | r3hf - baseline | +0.200 (one seed, no interval) |" in report
    assert "rewardlab's per-token RLOO" in report and "not standard RLOO" in report
    assert "every seed" not in report


def test_ppo_comparisons_keep_algo_critic_and_shaping_and_pair_seeds():
    ppo = fake_ppo(0.6, seeds=3)
    assert set(ppo) == {"critic-free", "fresh-critic", "potential-offset"}
    assert [(a["algo"], a["shaping"], a["critic_init"]) for a in ppo["critic-free"]["arms"]] == [
        ("rloo", "sparse", None),
        ("rloo", "r3hf", None),
        ("ppo", "sparse", "reward-model"),
    ]
    assert [a["critic_init"] for a in ppo["fresh-critic"]["arms"]] == ["fresh", "fresh", "reward-model"]
    assert ppo["fresh-critic"]["arms"][-1]["arm"] == "baseline" and "per-token" in ppo["critic-free"]["construction"]
    assert [a["critic_init"] for a in ppo["potential-offset"]["arms"]] == ["reward-model", "potential-offset"]
    diff = ppo["fresh-critic"]["r3hf_minus_sparse"]["gold_gain"]
    # every seed: r3hf ends 0.2 above sparse (final = the last step of 4), so the paired differences have no spread
    assert diff["values"] == [pytest.approx(0.2)] * 3 and diff["std"] == pytest.approx(0.0, abs=1e-12)
    assert ppo["fresh-critic"]["seeds"] == 3 and ppo["fresh-critic"]["steps"] == 3
    lines = findings(fake_results(0.7, 0.6, 0.1, seeds=3))
    fresh = [line for line in lines if line.startswith("PPO with a fresh critic")]
    assert "3 seed(s)" in fresh[0] and "16 held-out test_id prompts" in fresh[0]
    r3hf_vs_baseline = next(line for line in fresh if "r3hf - baseline" in line)
    assert "per seed +0.200, +0.200, +0.200" in r3hf_vs_baseline and "at matched KL 0.30" in r3hf_vs_baseline
    assert "agrees with R3HF's claim against the sparse PPO users run" in r3hf_vs_baseline
    sparse_vs_baseline = next(line for line in fresh if "sparse - baseline" in line)
    assert "+0.000" in sparse_vs_baseline and "not distinguishable at this size" in sparse_vs_baseline


def test_equivalence_check_reports_where_the_runs_part():
    same = fake_ppo(0.6)["potential-offset"]["coincidence"]
    assert same["steps_matching"] == 4 == same["steps_logged"] and same["max_abs_difference"]["gold_reward"] == 0.0
    parted = fake_ppo(0.6, offset_gap=0.05)["potential-offset"]["coincidence"]
    assert parted["steps_matching"] == 2 and parted["max_abs_difference"]["gold_reward"] == pytest.approx(0.05)
    line = next(x for x in findings(fake_results(0.7, 0.6, 0.1)) if x.startswith("PPO with the reward-model critic"))
    assert "for 4 of 4 steps" in line and "the same runs" in line
    ppo = fake_ppo(0.6)
    assert ppo["potential-offset"]["prefix_score_explained_variance"] is None  # the fake logs carry none
    ppo["potential-offset"]["prefix_score_explained_variance"] = -1.2
    assert "explains -1.20 of the variance of the returns (worse than a constant)" in " ".join(
        findings(fake_results(0.7, 0.6, 0.1) | {"ppo": ppo})
    )
    first = ppo_log(0.4)
    assert coincidence(first, [r | {"proxy_reward": r["proxy_reward"] + 1e-3} for r in first])["steps_matching"] == 0


def test_ppo_sampling_error_from_a_noisy_tail_blocks_a_single_seed_verdict():
    def run(tail):  # 8 steps: the last quarter (2 steps) is `tail`
        return [{"gold_reward": g, "kl": 0.0, "proxy_reward": 0.0} for g in [0.5] * 6 + tail]

    quiet = summarise_ppo({"sparse": [run([0.60, 0.60])], "r3hf": [run([0.64, 0.64])]})
    noisy = summarise_ppo({"sparse": [run([0.50, 0.70])], "r3hf": [run([0.54, 0.74])]})
    assert quiet["r3hf"]["gold_final_sem"] == 0.0
    # stdev(0.54, 0.74) / sqrt(2) = 0.1414 / 1.414 = 0.1
    assert abs(noisy["r3hf"]["gold_final_sem"] - 0.1) < 1e-9
    # the tail's noise is descriptive only now: runs without a held-out evaluation get no verdict at all
    logs = {c.name: {"sparse": [run([0.60, 0.60])], "r3hf": [run([0.64, 0.64])]} for c in PPO_COMPARISONS}
    lines = findings(fake_results(0.6, 0.4, 0.0) | {"ppo": summarise_ppo_comparisons(logs)})
    assert sum("no held-out evaluation in these runs, so no verdict" in line for line in lines) == 2
    assert all("R3HF's claim" not in line for line in lines)


def fake_world_check(probe_base: float, after: list[float], vanilla: list[float], judge: float = 0.85) -> dict:
    from rewardlab.demo.stats import mean_std
    from rewardlab.world_check import world_check_conditions

    conditions = world_check_conditions(probe_base, after, vanilla)
    cell = {
        "probe_ood_base": probe_base,
        "probe_ood_after_vanilla": mean_std(after),
        "vanilla_ood": mean_std(vanilla),
        "conditions": conditions,
    }
    return {
        "train_size": "large",
        "probe_ood_base": probe_base,
        "probe_ood_after_vanilla": mean_std(after)["mean"],
        "likelihood_judge_ood": judge,
        "vanilla_ood": mean_std(vanilla)["mean"],
        "conditions": conditions,
        "both_conditions_hold": all(c["holds"] for c in conditions.values()),
        "by_size": {"large": cell, "small": cell},
    }


def grm_summary(lines: list[str]) -> str:
    return next(x for x in lines if x.startswith("GRM:"))


def test_world_check_comes_first_and_its_conditions_follow_the_numbers():
    results = fake_results(grm_ood=0.6, r3hf_final=0.4, grm_bon_end=0.0)  # GRM within the noise everywhere
    results["world_check"] = fake_world_check(0.76, [0.72, 0.73, 0.71], [0.70, 0.69, 0.71])
    lines = findings(results)
    assert lines[0].startswith("world check, large data: base features good where the reward is read")
    assert "probe_ood_base 0.760 >= vanilla_ood 0.700): holds (+6.0 points, every seed)" in lines[0]
    assert "probe_ood_after_vanilla 0.720 ± 0.010 < probe_ood_base 0.760): holds (+4.0 points, every seed)" in lines[0]
    assert "GRM's regularisers show no effect distinguishable at this size" in grm_summary(lines)

    results["world_check"] = fake_world_check(0.68, [0.70, 0.71, 0.72], [0.70, 0.69, 0.71])
    lines = findings(results)
    assert "FAILS (-2.0 points)" in lines[0] and "FAILS (-3.0 points)" in lines[0]
    assert "the world check fails" in grm_summary(lines)

    good = fake_results(grm_ood=0.7, r3hf_final=0.4, grm_bon_end=0.0)
    good["world_check"] = fake_world_check(0.76, [0.72, 0.73, 0.71], [0.70, 0.69, 0.71])
    assert "1 of 6 GRM cells beat vanilla" in grm_summary(findings(good))


def test_report_puts_the_world_check_before_the_reward_model_table_and_labels_the_extra_rows():
    from rewardlab.demo import FROZEN, OFFICIAL_PAIRING, ROW_LABELS

    results = fake_results(0.6, 0.4, 0.0)
    results["world_check"] = fake_world_check(0.76, [0.72, 0.73, 0.71], [0.70, 0.69, 0.71])
    table = results["reward_models"]
    table[FROZEN] = {"small": cell(0.68, 0.66), "large": cell(0.7, 0.67)}
    mlp, linear = OFFICIAL_PAIRING
    table[mlp] = {"small": cell(0.7, 0.65), "large": cell(0.75, 0.66)}
    table[linear] = {"small": cell(0.7, 0.6), "large": cell(0.75, 0.62)}
    results["findings"] = findings(results)
    report = render_report(results)
    assert report.index("## World check") < report.index("## Reward models")
    assert "| 0.760 | 0.720 | 0.850 | 0.700 |" in report
    assert f"| {ROW_LABELS[mlp]} | 0.700 ± 0.010 | 0.650 ± 0.020 |" in report
    # official pairing, small data: 0.65 - 0.60 = +5.0; same head (grm-sft 0.6 vs vanilla 0.6): +0.0; head share +5.0
    official = next(x for x in results["findings"] if x.startswith("small data, the official code's pairing"))
    assert "OOD +5.0 points" in official and "against +0.0 with one head" in official and "account for +5.0" in official
    assert any(x.startswith("large data: frozen backbone") and "OOD 0.670, vanilla 0.620" in x for x in results["findings"])


def test_gold_at_kl_interpolates_at_the_first_crossing_against_a_hand_computation():
    import numpy as np

    from rewardlab.demo.ppo_comparisons import common_kl_grid, gold_at_kl

    kl, gold = [0.0, 0.2, 0.6, 0.4], [0.30, 0.40, 0.60, 0.20]
    got = gold_at_kl(kl, gold, [0.0, 0.1, 0.5, 0.6, 0.7])
    # by hand: 0.1 is halfway from 0 to 0.2 -> 0.35; 0.5 lies 3/4 of the way from 0.2 to 0.6 -> 0.4 + 0.75 * 0.2 = 0.55
    # (its later crossing on the way back down, 0.6 -> 0.4, would give 0.4: the first crossing counts); 0.7 is never reached
    assert got[:4] == pytest.approx([0.30, 0.35, 0.55, 0.60]) and got[4] is None
    assert got[:4] == pytest.approx(list(np.interp([0.0, 0.1, 0.5, 0.6], kl[:3], gold[:3])))  # the rising stretch
    assert gold_at_kl([0.0, 0.3, 0.3], [0.1, 0.2, 0.5], [0.3]) == [pytest.approx(0.2)]  # a flat stretch: its first point
    assert gold_at_kl([0.0], [0.4], [0.0, 0.1]) == [0.4, None]
    with pytest.raises(ValueError):
        gold_at_kl([0.0, 0.1], [0.3], [0.05])
    # every run reaches the grid: fractions of the smallest of the runs' largest KL (here 0.6, not 0.8)
    assert common_kl_grid([[0.0, 0.8, 0.5], [0.0, 0.6]]) == pytest.approx([0.15, 0.3, 0.45, 0.6])
    assert common_kl_grid([[0.0, 0.4], [0.0, 0.0]]) == []


def test_seed_contrast_gives_no_interval_with_one_seed_and_a_t_interval_with_more():
    from rewardlab.demo.ppo_comparisons import ONE_SEED, contrast

    one = contrast([0.3])
    assert one["verdict"] == ONE_SEED and one["ci_low"] is None and one["n_seeds"] == 1
    # mean 0.2, sd 0.1, t(2, 0.975) = 4.302653: half-width 0.1 * 4.302653 / sqrt(3) = 0.248414
    wide = contrast([0.1, 0.2, 0.3])
    assert wide["ci_low"] == pytest.approx(0.2 - 0.248414, abs=1e-5) and wide["ci_high"] == pytest.approx(0.448414, abs=1e-5)
    assert wide["verdict"] == "not distinguishable at this size"
    assert contrast([0.19, 0.2, 0.21])["verdict"] == "better" and contrast([-0.19, -0.2, -0.21])["verdict"] == "worse"


@pytest.mark.usefixtures("one_thread")  # tiny matrices: on a busy CPU a second thread spin-waits (10x slower)
def test_tiny_demo_ppo_runs_hold_the_baseline_and_gold_at_kl(tmp_path):
    """The demo's PPO step end to end on tiny-llama (1 seed x 2 steps, 7 runs): every verdict comparison has the
    reward-model critic's sparse baseline, held-out eval rows, `gold_at_kl` per arm and seed, and paired contrasts (one
    seed: no interval); results.json-ready. (Two seeds' statistics: the pure functions' tests above.)"""
    from rewardlab.demo.ppo_comparisons import BASELINE, run_ppo_comparisons
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.modeling.tiny import build_tiny_llama
    from rewardlab.runtime import write_json

    rm_path = tmp_path / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=3).save_pretrained(rm_path)
    cfg = DemoConfig.make(quick=True, output_dir=str(tmp_path / "demo"), progress=False)
    cfg.ppo_seeds, cfg.ppo_steps, cfg.ppo_check_steps, cfg.ppo_batch_size, cfg.rloo_k = 1, 2, 1, 4, 2
    cfg.ppo_eval_prompts, cfg.ppo_eval_every = 3, 2
    policy = build_tiny_llama(seed=1)
    for part in policy:  # the worker processes load the policy from its path
        part.save_pretrained(tmp_path / "policy")
    ppo, logs = run_ppo_comparisons(cfg, tmp_path / "ppo", policy, tmp_path / "policy", rm_path)  # 2 worker processes
    write_json(tmp_path / "results.json", {"ppo": ppo})  # strict JSON: no NaN or inf anywhere
    for name in ("critic-free", "fresh-critic"):
        entry = ppo[name]
        baseline = next(arm for arm in entry["arms"] if arm["arm"] == BASELINE)
        assert (baseline["algo"], baseline["shaping"], baseline["critic_init"]) == ("ppo", "sparse", "reward-model")
        assert all(len(arm["gold_at_kl"]["per_seed"]) == 1 for arm in entry["arms"])
        assert all(arm["held_out"]["steps"] == [0, 2] and arm["held_out"]["n_prompts"] == 3 for arm in entry["arms"])
        assert set(entry["paired"]) == {"r3hf - sparse", "r3hf - baseline", "sparse - baseline"}
        final = entry["paired"]["r3hf - baseline"]["final"]
        assert final["n_seeds"] == 1 and final["ci_low"] is None and final["verdict"].startswith("one seed")
        assert len(entry["kl_grid"]) in (0, 4)
    # the baseline ran once per seed and serves both comparisons
    assert logs["critic-free"][BASELINE] == logs["fresh-critic"][BASELINE]
    assert sorted(p.name for p in (tmp_path / "ppo").iterdir() if p.name.startswith(BASELINE)) == ["baseline-sparse-s0"]
    lines = ppo_findings(ppo)
    assert any("r3hf - baseline" in line for line in lines) and not any("every seed" in line for line in lines)

    # one process, the models loaded once and shared: the same runs, number for number
    cfg.workers = 1
    _, serial = run_ppo_comparisons(cfg, tmp_path / "ppo-serial", policy, tmp_path / "policy", rm_path)
    for name, arms in logs.items():
        for arm, runs in arms.items():
            for parallel_rows, serial_rows in zip(runs, serial[name][arm], strict=True):
                keys = ("step", "gold_reward", "kl", "proxy_reward")
                assert [{k: r.get(k) for k in keys} for r in parallel_rows] == [{k: r.get(k) for k in keys} for r in serial_rows]


def test_grm_findings_follow_the_paired_comparisons_when_the_results_have_them():
    def entry(variant, size, split, diff, verdict_holm):
        return {"variant": variant, "size": size, "eval_set": split, "diff": diff, "ci_low": diff - 0.02,
                "ci_high": diff + 0.02, "n_pairs": 600, "n_seeds": 3, "p_mcnemar": 0.001, "p_holm": 0.01, "level": 0.95,
                "verdict_holm": verdict_holm}  # fmt: skip

    comparisons = [entry("grm-sft", "small", "ood", 0.05, "better"), entry("grm-sft", "small", "id", 0.0, "n"),
                   entry("grm-dpo", "small", "ood", 0.01, "not distinguishable at this size")]  # fmt: skip
    results = fake_results(grm_ood=0.6, r3hf_final=0.4, grm_bon_end=0.0)  # the seed-spread rule would find nothing
    results |= {"comparisons": comparisons, "comparisons_family": {"size": 3}}
    lines = findings(results)
    sft = next(x for x in lines if x.startswith("small data: grm-sft"))
    assert "OOD +5.0 points [95% interval +3.0, +7.0] (3 seeds, 600 pairs" in sft and "ID +0.0 points" in sft
    assert sft.endswith("agrees with GRM's claim of better OOD accuracy.")
    dpo = next(x for x in lines if x.startswith("small data: grm-dpo"))
    assert "not distinguishable at this size; no verdict on GRM's claim" in dpo


def test_the_best_of_n_verdict_pairs_the_picks_by_prompt(tmp_path):
    """results.json's bon.paired: grm-sft's best-of-n pick minus vanilla's, in gold, on the same samples; recomputed here
    by hand (argmax per prompt), with the sign test's counts."""
    import numpy as np

    from rewardlab.demo.pipeline import paired_best_of_n
    from rewardlab.demo.report import bon_findings
    from rewardlab.generation import Sample, SampleBatch
    from rewardlab.rl.bon import ScoredSamples

    rng = np.random.default_rng(0)
    prompts, n = 40, 4
    gold, van, grm = (rng.normal(size=(prompts, n)) for _ in range(3))
    grm += 0.8 * gold  # grm-sft's proxy follows the gold more closely
    samples = [Sample(p, [1], [2, 3], True, f"r{p}-{j}") for p in range(prompts) for j in range(n)]
    batch = SampleBatch([f"p{p}" for p in range(prompts)], samples)
    scored = ScoredSamples(batch, {"vanilla": van, "grm-sft": grm}, gold, tmp_path)
    result = paired_best_of_n(scored, {"vanilla": [tmp_path / "v"], "grm-sft": [tmp_path / "g"]})
    by_hand = gold[np.arange(prompts), grm.argmax(1)] - gold[np.arange(prompts), van.argmax(1)]
    assert result["diff"] == pytest.approx(by_hand.mean())
    assert result["n_pairs"] == prompts and result["n_seeds"] == 1 and result["n"] == n
    assert result["discordant"] == {"a_better": int((by_hand > 0).sum()), "b_better": int((by_hand < 0).sum())}
    assert result["ci_low"] <= result["diff"] <= result["ci_high"] and "p_sign" in result and "p_mcnemar" not in result
    assert result["verdict"] == "better"  # the planted effect: grm-sft's proxy carries the gold
    lines = bon_findings({"curves": {k: {"gold": [0.0, 0.1], "gold_sem": [0.01, 0.01]} for k in ("vanilla", "grm-sft")},
                          "paired": result})  # fmt: skip
    assert "Paired on the same samples at N = 4" in lines[0] and "(1 seed, 40 prompts" in lines[0]


def test_the_alpha_kept_is_the_best_on_validation_with_ties_to_the_default():
    from rewardlab.demo.reward_models import choose_alpha

    assert choose_alpha({0.01: 0.70, 0.1: 0.72, 0.3: 0.71}, preferred=0.01) == 0.1
    assert choose_alpha({0.01: 0.72, 0.1: 0.72, 0.3: 0.71}, preferred=0.01) == 0.01
    assert choose_alpha({0.01: 0.70, 0.1: 0.72, 0.3: 0.72}, preferred=0.01) == 0.1


def test_the_demo_starts_from_the_worlds_base_policy_and_its_step_policy_from_that():
    from rewardlab.demo.prm import step_policy_config
    from rewardlab.tasks.policy import BasePolicyConfig

    for cfg in (DemoConfig.make(), DemoConfig.make(quick=True)):
        assert cfg.base_policy_config() == BasePolicyConfig()  # the world's base policy: its cache key as before
        step = step_policy_config(cfg)
        assert step.base_config() == cfg.base_policy_config() and step.warm_start_steps == cfg.step_policy_steps

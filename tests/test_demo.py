"""The demo's report logic: every sentence is computed from the run's numbers (flip the numbers, flip the verdict)."""

import pytest

from rewardlab.demo import (
    PPO_COMPARISONS,
    VARIANTS,
    DemoConfig,
    coincidence,
    findings,
    render_report,
    summarise_ppo,
    summarise_ppo_comparisons,
)


def cell(id_acc, ood_acc):
    return {"id": {"mean": id_acc, "std": 0.01, "values": [id_acc]}, "ood": {"mean": ood_acc, "std": 0.02, "values": [ood_acc]}}


def ppo_log(final: float, start: float = 0.3, kl: float = 0.1) -> list[dict]:
    return [{"step": s, "gold_reward": start + (final - start) * s / 3, "kl": kl * s, "proxy_reward": s} for s in range(4)]


def fake_ppo(r3hf_final: float, seeds: int = 1, offset_gap: float = 0.0) -> dict:
    """Comparison logs: in the verdict comparisons sparse ends at 0.4 and r3hf at `r3hf_final` (+ 0.01 per seed); the
    equivalence comparison's r3hf differs from sparse by `offset_gap` from step 2."""
    logs = {}
    for comparison in PPO_COMPARISONS:
        if comparison.kind == "verdict":
            logs[comparison.name] = {
                "sparse": [ppo_log(0.4 + 0.01 * k) for k in range(seeds)],
                "r3hf": [ppo_log(r3hf_final + 0.01 * k) for k in range(seeds)],
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
    assert "agrees with R3HF" in " ".join(lines)

    bad = fake_results(grm_ood=0.5, r3hf_final=0.35, grm_bon_end=0.0)
    lines = findings(bad)
    sft_small = next(x for x in lines if x.startswith("small data: grm-sft"))
    assert "OOD -10.0 points" in sft_small and "contradicts" in sft_small
    assert "contradicts GRM's claim of less over-optimisation" in " ".join(lines)
    assert "contradicts R3HF" in " ".join(lines)


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


def test_ppo_comparisons_keep_algo_critic_and_shaping_and_pair_seeds():
    ppo = fake_ppo(0.6, seeds=3)
    assert set(ppo) == {"critic-free", "fresh-critic", "potential-offset"}
    assert [(a["algo"], a["shaping"], a["critic_init"]) for a in ppo["critic-free"]["arms"]] == [
        ("rloo", "sparse", None),
        ("rloo", "r3hf", None),
    ]
    assert [a["critic_init"] for a in ppo["fresh-critic"]["arms"]] == ["fresh", "fresh"]
    assert [a["critic_init"] for a in ppo["potential-offset"]["arms"]] == ["reward-model", "potential-offset"]
    diff = ppo["fresh-critic"]["r3hf_minus_sparse"]["gold_gain"]
    # every seed: r3hf ends 0.2 above sparse (final = the last step of 4), so the paired differences have no spread
    assert diff["values"] == [pytest.approx(0.2)] * 3 and diff["std"] == pytest.approx(0.0, abs=1e-12)
    assert ppo["fresh-critic"]["seeds"] == 3 and ppo["fresh-critic"]["steps"] == 3
    lines = findings(fake_results(0.7, 0.6, 0.1, seeds=3))
    fresh = next(line for line in lines if line.startswith("PPO with a fresh critic"))
    assert "3 seed(s)" in fresh and "+0.200, +0.200, +0.200" in fresh and "agrees with R3HF" in fresh


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
    base = fake_results(0.6, 0.4, 0.0)
    for tail_sparse, tail_r3hf, expected in (
        ([0.60, 0.60], [0.64, 0.64], "agrees with R3HF"),
        ([0.50, 0.70], [0.54, 0.74], "no clear difference; does not reproduce R3HF"),
    ):
        logs = {c.name: {"sparse": [run(tail_sparse)], "r3hf": [run(tail_r3hf)]} for c in PPO_COMPARISONS}
        lines = findings(base | {"ppo": summarise_ppo_comparisons(logs)})
        verdicts = [line for line in lines if "R3HF's claim" in line]
        assert len(verdicts) == 2 and all(expected in line for line in verdicts)


def fake_world_check(probe_base: float, after: list[float], vanilla: list[float], judge: float = 0.85) -> dict:
    from rewardlab.demo import _mean_std
    from rewardlab.world_check import world_check_conditions

    conditions = world_check_conditions(probe_base, after, vanilla)
    cell = {
        "probe_ood_base": probe_base,
        "probe_ood_after_vanilla": _mean_std(after),
        "vanilla_ood": _mean_std(vanilla),
        "conditions": conditions,
    }
    return {
        "train_size": "large",
        "probe_ood_base": probe_base,
        "probe_ood_after_vanilla": _mean_std(after)["mean"],
        "likelihood_judge_ood": judge,
        "vanilla_ood": _mean_std(vanilla)["mean"],
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
    assert "GRM's regularisers do not help" in grm_summary(lines)

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

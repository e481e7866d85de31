"""The demo's words: the findings (every number from the run's results, each verdict beyond the seed spread or "no clear
difference") and report.md."""

from __future__ import annotations

import statistics

from rewardlab.demo.config import FROZEN, OFFICIAL_PAIRING, ROW_LABELS, STEP_PPO
from rewardlab.demo.stats import with_spread

PPO_LABELS = {
    "critic-free": "Critic-free (rewardlab's per-token RLOO, not standard RLOO)",
    "fresh-critic": "PPO with a fresh critic",
    "potential-offset": "PPO with the reward-model critic",
    STEP_PPO: "Process vs outcome supervision (PPO on step tasks, fresh critics)",
}


def verdict(difference: float, spread: float, floor: float) -> str:
    """'agrees with' only when the difference exceeds the spread over seeds (or `floor` when there is no spread);
    within it there is no clear difference, which does not reproduce a claim either."""
    threshold = max(spread, floor)
    if difference > threshold:
        return "agrees with"
    if difference < -threshold:
        return "contradicts"
    return "no clear difference; does not reproduce"


def findings(results: dict) -> list[str]:
    """Plain sentences comparing this run's figures with the papers' claims; every number comes from `results`.
    The world check comes first: whether this world can show GRM's mechanism at all."""
    check = results.get("world_check")
    lines = [f"world check, {line}" for line in world_check_findings(check)] if check else []
    if check and "neutral" in check:  # the same check where the ID-only cue says nothing (issue 21, part 4)
        lines += [f"world check on the cue-neutral OOD pairs, {line}" for line in world_check_findings(check["neutral"])]
    table = results["reward_models"]
    if results.get("comparisons"):  # paired by seed, with intervals (rewardlab compare's statistics, Holm's family)
        grm_lines, grm_agrees = paired_grm_findings(results["comparisons"], results["comparisons_family"])
    else:  # results from before the paired comparisons
        grm_lines, grm_agrees = grm_findings(table)
    lines += grm_lines + baseline_findings(table)
    if check:
        lines.append(grm_summary(check, grm_agrees))
    lines += bon_findings(results.get("bon", {}))
    lines += ppo_findings(results.get("ppo", {}))
    lines += prm_findings(results.get("prm"))
    return lines


def prm_findings(prm: dict | None) -> list[str]:
    """Process supervision: the PRM's pick against the outcome RM's on gold, paired by prompt and seed; a claim (process
    supervision selects better, Lightman et al. 2023) only where the interval excludes zero."""
    if not prm:
        return []
    bon = prm["bon"]
    said = CLAIM_WORDS.get(bon["verdict"], "not distinguishable at this size; no verdict on")
    seeds = f"{bon['n_seeds']} seed{'s' if bon['n_seeds'] > 1 else ''}"
    return [
        f"process supervision: best-of-{bon['n']} among sampled step solutions (each step wrong w.p. {bon['error_rate']:g}), "
        f"the PRM's pick ({bon['prm_aggregate']} of P(step correct)) minus the outcome RM's, gold {bon['diff']:+.3f} "
        f"[{bon['level']:.0%} interval {bon['ci_low']:+.3f}, {bon['ci_high']:+.3f}] ({seeds}, {bon['n_pairs']} prompts, "
        f"sign test p {bon['p_sign']:.2g}; a random pick {bon['gold_random']:.3f}, the best candidate {bon['gold_oracle']:.3f}): "
        f"{said} the claim that process supervision selects better solutions."
    ] + (ppo_verdict_findings(PPO_LABELS[STEP_PPO], prm["ppo"]) if "ppo" in prm else [])


def render_prm(prm: dict) -> list[str]:
    """The process-supervision section: the step policy, each model's validation figures, then the paired best-of-N and
    PPO comparisons (figure: prm_ppo_gold.png)."""
    lines = ["## Process supervision: PRM vs outcome RM as best-of-N selectors and as PPO's reward", ""]
    if "step_policy" in prm:
        policy = prm["step_policy"]
        lines += [
            f"Step policy: the base policy warm-started for {policy['warm_start_steps']} steps on a mix with step tasks; "
            f"outcome gold {policy['gold_id']['mean_outcome_gold']:.3f} (test_id) / "
            f"{policy['gold_ood']['mean_outcome_gold']:.3f} (test_ood), every step right "
            f"{policy['gold_id']['all_steps_correct']:.2f} / {policy['gold_ood']['all_steps_correct']:.2f}. The PRM, the "
            "outcome RM and PPO's policy start from it.",
            "",
        ]
    lines += [
        "Each PRM is kept at its lowest validation loss (its step cross-entropy), each outcome RM at its best validation "
        "accuracy.",
        "",
        "| model | seed | validation accuracy | first-error F1 | steps trained |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (("prm", "PRM (step accuracy)"), ("orm", "outcome RM (pairwise accuracy)")):
        for seed, entry in enumerate(prm["validation"][kind]):
            f1 = entry.get("first_error_f1")
            lines.append(f"| {label} | {seed} | {entry['accuracy']:.3f} | {'-' if f1 is None else f'{f1:.3f}'} | "
                         f"{entry['steps_trained']} |")  # fmt: skip
    return [*lines, "", *[f"- {line}" for line in prm_findings(prm)], ""]


def grm_findings(table: dict) -> tuple[list[str], list[bool]]:
    """Each GRM variant against vanilla at each size (OOD and ID), with a verdict on GRM's claim of better OOD accuracy;
    and per cell whether it agrees."""
    lines, agrees = [], []
    for size in table["vanilla"]:
        van = table["vanilla"][size]
        for variant in ("grm-sft", "grm-dpo", "grm-dpo-noref"):
            cell = table[variant][size]
            d_ood = cell["ood"]["mean"] - van["ood"]["mean"]
            d_id = cell["id"]["mean"] - van["id"]["mean"]
            spread = (cell["ood"]["std"] ** 2 + van["ood"]["std"] ** 2) ** 0.5
            said = verdict(d_ood, spread, 0.005)
            agrees.append(said == "agrees with")
            lines.append(
                f"{size} data: {variant} vs vanilla: OOD {d_ood * 100:+.1f} points (seed spread {spread * 100:.1f}), "
                f"ID {d_id * 100:+.1f} points ({said} GRM's claim of better OOD accuracy)."
            )
    return lines, agrees


GRM_VARIANTS = ("grm-sft", "grm-dpo", "grm-dpo-noref")
CLAIM_WORDS = {"better": "agrees with", "worse": "contradicts"}


def paired_grm_findings(comparisons: list[dict], family: dict) -> tuple[list[str], list[bool]]:
    """Each GRM variant against vanilla at each size, OOD (ID beside it), judged by the paired comparison's verdict with
    Holm's adjustment across every comparison of the run: a claim only where the interval excludes zero."""
    by_key = {(c["variant"], c["size"], c["eval_set"]): c for c in comparisons}
    lines, agrees = [], []
    for (variant, size, split), c in by_key.items():
        if variant not in GRM_VARIANTS or split != "ood":
            continue
        on_id = by_key.get((variant, size, "id"))
        said = CLAIM_WORDS.get(c["verdict_holm"], "not distinguishable at this size; no verdict on")
        agrees.append(c["verdict_holm"] == "better")
        seeds = f"{c['n_seeds']} seed{'s' if c['n_seeds'] > 1 else ''}"
        lines.append(
            f"{size} data: {variant} vs vanilla: OOD {c['diff'] * 100:+.1f} points [{c['level']:.0%} interval "
            f"{c['ci_low'] * 100:+.1f}, {c['ci_high'] * 100:+.1f}] ({seeds}, {c['n_pairs']} pairs, McNemar p "
            f"{c['p_mcnemar']:.2g}, Holm p {c['p_holm']:.2g} over {family['size']} comparisons)"
            + (f", ID {on_id['diff'] * 100:+.1f} points" if on_id else "")
            + f": {said} GRM's claim of better OOD accuracy."
        )
    return lines, agrees


def baseline_findings(table: dict) -> list[str]:
    """Per size: the frozen backbone against vanilla, and the official code's pairing against one head for both."""
    lines = []
    for size in table["vanilla"]:
        if FROZEN in table:
            frozen, van = table[FROZEN][size]["ood"]["mean"], table["vanilla"][size]["ood"]["mean"]
            lines.append(f"{size} data: frozen backbone (linear head fit to convergence) OOD {frozen:.3f}, vanilla {van:.3f}.")
        if all(name in table for name in OFFICIAL_PAIRING):
            grm, bt = (table[name][size]["ood"] for name in OFFICIAL_PAIRING)
            d_official = grm["mean"] - bt["mean"]
            d_same = table["grm-sft"][size]["ood"]["mean"] - table["vanilla"][size]["ood"]["mean"]
            spread = (grm["std"] ** 2 + bt["std"] ** 2) ** 0.5
            lines.append(
                f"{size} data, the official code's pairing (grm-sft with the MLP head vs vanilla with a linear head without "
                f"dropout): OOD {d_official * 100:+.1f} points (seed spread {spread * 100:.1f}) against {d_same * 100:+.1f} "
                f"with one head for both, so the head and dropout account for {(d_official - d_same) * 100:+.1f} points."
            )
    return lines


def grm_summary(check: dict, grm_agrees: list[bool]) -> str:
    """What the GRM verdicts can say, given the world check."""
    if not check["both_conditions_hold"]:
        return "GRM: the world check fails, so the GRM verdicts above cannot speak for or against GRM's mechanism here."
    if not any(grm_agrees):
        return (
            "GRM: both world-check conditions hold, and still no GRM variant beats vanilla out of distribution by the "
            "comparisons above at either size: in this world, GRM's regularisers show no effect distinguishable at this "
            "size."
        )
    return (
        f"GRM: both world-check conditions hold, and {sum(grm_agrees)} of {len(grm_agrees)} GRM cells beat vanilla "
        "out of distribution by the comparisons above."
    )


def bon_findings(bon: dict) -> list[str]:
    """Best-of-N: the gold gain at the largest N, vanilla against grm-sft; the verdict on less over-optimisation from
    the paired comparison of their picks (per prompt, seeds paired) where the results have it."""
    paired = bon.get("paired")
    bon = bon.get("curves", bon)
    gold_end = {}
    for name in ("vanilla", "grm-sft"):
        curve = bon.get(name) if isinstance(bon, dict) else None
        if curve and "gold" in curve:
            gold = curve["gold"]
            sem = curve.get("gold_sem", [0.0])[-1]
            gold_end[name] = (gold[-1] - gold[0], max(gold) - gold[0], sem if sem == sem else 0.0)
    if len(gold_end) < 2:
        return []
    (v_end, v_peak, v_sem), (g_end, g_peak, g_sem) = gold_end["vanilla"], gold_end["grm-sft"]
    gains = (
        f"best-of-N: gold gain at the largest N (seed-0 models): vanilla {v_end:+.3f} (peak {v_peak:+.3f}), grm-sft "
        f"{g_end:+.3f} (peak {g_peak:+.3f})"
    )
    if paired is None:  # results from before the paired comparison
        said = verdict(g_end - v_end, (v_sem**2 + g_sem**2) ** 0.5, 0.01)
        return [f"{gains}; {said} GRM's claim of less over-optimisation."]
    said = CLAIM_WORDS.get(paired["verdict"], "not distinguishable at this size; no verdict on")
    seeds = f"{paired['n_seeds']} seed{'s' if paired['n_seeds'] > 1 else ''}"
    return [
        f"{gains}. Paired on the same samples at N = {paired['n']}: grm-sft's pick minus vanilla's, gold "
        f"{paired['diff']:+.3f} [{paired['level']:.0%} interval {paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}] "
        f"({seeds}, {paired['n_pairs']} prompts, sign test p {paired['p_sign']:.2g}): {said} GRM's claim of less "
        "over-optimisation."
    ]


def ppo_findings(ppo: dict) -> list[str]:
    """One sentence per PPO comparison, then one per paired contrast: verdicts on held-out gold at matched KL, claimed
    only where the t-interval over seeds excludes zero (one seed: none); the measured equivalence where dense rewards
    cannot matter."""
    lines = []
    for name, entry in ppo.items():
        label = PPO_LABELS.get(name, name)
        if entry["kind"] == "verdict":
            lines += ppo_verdict_findings(label, entry)
        else:
            c = entry["coincidence"]
            match = "the same" if c["steps_matching"] == c["steps_logged"] else "different"
            lines.append(
                f"{label}: r3hf with the potential-offset critic logged the same proxy and gold rewards as sparse for "
                f"{c['steps_matching']} of {c['steps_logged']} steps (max |gold difference| "
                f"{c['max_abs_difference']['gold_reward']:.1e}, |KL difference| {c['max_abs_difference']['kl']:.1e}): "
                f"{match} runs, as potential-based shaping says; with a critic that already holds the prefix score, "
                "r3hf is sparse PPO, and a difference would come only from how the critic starts."
            )
            explained = entry.get("prefix_score_explained_variance")
            if explained is not None:
                quality = "better" if explained > 0 else "worse"
                lines.append(
                    f"The reward model's prefix score R(x, y<t), read as a value estimate at step 0, explains "
                    f"{explained:+.2f} of the variance of the returns ({quality} than a constant): that is the per-token "
                    "baseline r3hf adds without a critic, and the signal it offers a fresh critic."
                )
    return lines


# ----- PPO against the baseline users run, on held-out prompts at matched KL (issue 21) -----

CONTRAST_CLAIMS = {  # contrast (arm - arm) -> the claim its verdict speaks to
    "r3hf - sparse": "R3HF's claim that dense rewards learn faster",
    "r3hf - baseline": "R3HF's claim against the sparse PPO users run (reward-model critic)",
    "sparse - baseline": "a gain of this arm's sparse run over the sparse PPO users run",
    "step - sparse": "the claim that a PRM's step rewards train a better policy than an outcome RM's sparse reward",
}


def contrast_words(said: str) -> str:
    """A contrast's verdict (rewardlab.paired_stats) as words on its claim: an effect only when the interval excludes 0."""
    from rewardlab.paired_stats import BETTER, WORSE

    if said == BETTER:
        return "agrees with"
    if said == WORSE:
        return "contradicts"
    if said.startswith("one seed"):
        return "one seed: not distinguishable at this size; no verdict on"
    return "not distinguishable at this size; does not reproduce"


def interval_text(c: dict, per_seed: bool = False) -> str:
    """A contrast's mean difference with its t-interval (or "one seed, no interval"), optionally its per-seed values."""
    if c["ci_low"] is None:
        return f"{c['diff']:+.3f} (one seed, no interval)"
    seeds = f"; per seed {', '.join(f'{v:+.3f}' for v in c['per_seed'])}" if per_seed else ""
    return (
        f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] ({c['level']:.0%} t-interval over {c['n_seeds']} "
        f"seeds{seeds})"
    )


def ppo_verdict_findings(label: str, entry: dict) -> list[str]:
    """The arms' held-out gold, then each paired contrast at the largest common KL (and at the final step)."""
    arms = {arm.get("arm", arm["shaping"]): arm for arm in entry["arms"]}
    if "paired" not in entry:
        return [f"{label}: no held-out evaluation in these runs, so no verdict."]
    held = {name: arm["held_out"] for name, arm in arms.items()}
    first = next(iter(held.values()))
    described = "; ".join(
        f"{name}{' (sparse PPO, reward-model critic)' if name == 'baseline' else ''} {h['gold_initial']['mean']:.3f} -> "
        f"{h['gold_final']['mean']:.3f} at KL {h['kl_final']['mean']:.2f}"
        for name, h in held.items()
    )
    lines = [
        f"{label}, {entry['seeds']} seed(s) x {entry['steps']} steps, gold on {first['n_prompts']} held-out test_id prompts "
        f"(first -> final checkpoint): {described}."
    ]
    kl = entry.get("kl_grid") or []
    for name, pair in entry["paired"].items():
        final = pair["final"]
        if kl:
            headline, where = pair["at_kl"][-1], f"at matched KL {kl[-1]:.2f}"
        else:
            headline, where = final, "at the final step (no common KL)"
        lines.append(
            f"{label}: {name}, held-out gold {where}: {interval_text(headline, per_seed=True)}; at the final step "
            f"{interval_text(final)}; {contrast_words(headline['verdict'])} {CONTRAST_CLAIMS.get(name, name)}."
        )
    return lines


def world_check_findings(check: dict) -> list[str]:
    """The two conditions in words, with their numbers, for the headline size and every other size."""
    lines = []
    for size, cell in [(check["train_size"], check["by_size"][check["train_size"]])] + [
        (s, c) for s, c in check["by_size"].items() if s != check["train_size"]
    ]:
        good, damage = cell["conditions"]["base_features_good"], cell["conditions"]["vanilla_damages_features"]
        after = cell["probe_ood_after_vanilla"]
        lines.append(
            f"{size} data: base features good where the reward is read (probe_ood_base {good['probe_ood_base']:.3f} >= "
            f"vanilla_ood {good['vanilla_ood']:.3f}): {'holds' if good['holds'] else 'FAILS'} "
            f"({good['difference'] * 100:+.1f} points{', every seed' if good['every_seed'] else ''}); vanilla training "
            f"damages them (probe_ood_after_vanilla {with_spread(after)} < probe_ood_base "
            f"{damage['probe_ood_base']:.3f}): {'holds' if damage['holds'] else 'FAILS'} "
            f"({damage['difference'] * 100:+.1f} points{', every seed' if damage['every_seed'] else ''})."
        )
    lines.append(f"the base model's likelihood as a judge (no training): OOD {check['likelihood_judge_ood']:.3f}.")
    return lines


def render_report_bon(bon: dict) -> list[str]:
    """The best-of-N section: the figure, and the analytic vs empirical KL at the largest N."""
    lines = ["## Best-of-N", "", "![best-of-N](bon/bon_curves.png)", ""]
    curves = bon.get("curves", {})
    if curves and all("kl_empirical" in c for c in curves.values()):
        first = next(iter(curves.values()))
        lines += [
            f"KL at N = {first['n'][-1]}: analytic log N - (N-1)/N = {first['kl'][-1]:.2f}; on the samples' empirical "
            "distribution (exact for a policy that repeats itself) "
            + ", ".join(f"{name} {c['kl_empirical'][-1]:.2f}" for name, c in curves.items())
            + f". Distinct responses: {bon.get('distinct_fraction', float('nan')):.0%} of the samples per prompt; the most "
            f"common one is {bon.get('top_response_share', float('nan')):.0%} of them. The analytic axis (left panel) "
            "overstates the KL; the right panel uses the empirical one.",
            "",
        ]
    return lines


def render_ppo_section(ppo: dict) -> list[str]:
    """The PPO section: what each comparison asks, one table row per arm (mean ± std over seeds), the figure."""
    lines = [
        "## PPO: sparse vs R3HF token rewards where they can differ",
        "",
        "With gamma = 1, r3hf is sparse plus potential-based shaping with Phi_t = R(x, y<t): under PPO + GAE it changes "
        "nothing but the critic's target. So the comparisons are (a) without a critic, (b) with a critic that does not "
        "hold Phi, and (c) the equivalence itself.",
        "",
    ]
    for name, entry in ppo.items():
        lines.append(f"- **{PPO_LABELS.get(name, name)}** ({entry['algo']}, {entry['seeds']} seed(s) x {entry['steps']} "
                     f"steps): {entry['question']}.")  # fmt: skip
    lines += [
        "",
        "| comparison | algo | shaping | critic | gold before | gold after (± seed std) | gain | gain averaged over steps "
        "| sampling error | KL | proxy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in ppo.items():
        for arm in entry["arms"]:
            lines.append(
                f"| {name} | {arm['algo']} | {arm['shaping']} | {arm['critic_init'] or 'none'} | "
                f"{arm['gold_initial']['mean']:.3f} | {with_spread(arm['gold_final'])} | "
                f"{with_spread(arm['gold_gain'], '+')} | {arm['gold_mean_gain']['mean']:+.3f} | "
                f"{arm['gold_final_sem']:.3f} | {arm['kl_final']['mean']:.2f} | {arm['proxy_final']['mean']:.3f} |"
            )
    lines += render_ppo_held_out(ppo)
    lines += ["", "![PPO gold reward](ppo_gold.png)"]
    return lines


def render_ppo_held_out(ppo: dict) -> list[str]:
    """The held-out evaluation: gold per arm at the common KL values, and the paired contrasts with their intervals."""
    rows = [(name, entry) for name, entry in ppo.items() if "paired" in entry]
    if not rows:
        return []
    lines = [
        "",
        "The table above reads the training rollouts (training prompts; successive steps are not independent). The verdicts "
        "read the held-out evaluation: gold on the world's test_id prompts (never trained on), one sample per prompt at the "
        "training temperature from a fixed seed, at fixed checkpoints; arms compared at matched KL (each run's gold "
        "interpolated at KL values every run reaches) and at the final step, seed by seed. The baseline is sparse PPO with "
        "the reward-model critic, the default users run, in the same seeds and steps.",
    ]
    for name, entry in rows:
        if entry.get("construction"):
            lines += ["", f"{PPO_LABELS.get(name, name)}: {entry['construction']}."]
    lines += ["", "| comparison | arm | algo | critic | held-out gold first | final | KL final | gold at KL |", "|---" * 8 + "|"]
    for name, entry in rows:
        for arm in entry["arms"]:
            h = arm["held_out"]
            at = ", ".join(
                f"{k:.2f}: {g:.3f}" if g is not None else f"{k:.2f}: -"
                for k, g in zip(h["gold_at_kl"]["kl"], h["gold_at_kl"]["mean"], strict=True)
            )
            lines.append(
                f"| {name} | {arm.get('arm', arm['shaping'])} | {arm['algo']} | {arm['critic_init'] or 'none'} | "
                f"{h['gold_initial']['mean']:.3f} | {with_spread(h['gold_final'])} | "
                f"{h['kl_final']['mean']:.2f} | {at or '-'} |"
            )
    lines += ["", "| comparison | contrast | at the largest common KL | at the final step | verdict |", "|---" * 5 + "|"]
    for name, entry in rows:
        for contrast_name, pair in entry["paired"].items():
            headline = pair["at_kl"][-1] if pair["at_kl"] else pair["final"]
            lines.append(
                f"| {name} | {contrast_name} | {interval_text(headline)} | {interval_text(pair['final'])} | "
                f"{headline['verdict']} |"
            )
    return lines


def render_world_check(check: dict) -> list[str]:
    """The world check section of the report: the four figures, then both conditions with their numbers."""
    lines = [
        "## World check (measured before any GRM model was trained)",
        "",
        f"Training size {check['train_size']}; probes are linear heads on fixed features at the reward-read position, "
        "trained on ID pairs (l2 by the one-standard-error rule on val_id), scored on test_ood.",
        "",
        "| probe_ood_base | probe_ood_after_vanilla | likelihood_judge_ood | vanilla_ood |",
        "|---|---|---|---|",
        f"| {check['probe_ood_base']:.3f} | {check['probe_ood_after_vanilla']:.3f} | {check['likelihood_judge_ood']:.3f} | "
        f"{check['vanilla_ood']:.3f} |",
        "",
    ]
    lines += [f"- {line}" for line in world_check_findings(check)]
    if "probe_l2_on_edge" in check:
        size = check["train_size"]
        where = (
            "on the edge of its grid even after the grid was extended: validation accuracy stays within one standard "
            "error of the best as l2 grows (a strongly regularised probe tends to the mean feature difference), so the "
            "one-standard-error rule takes the largest l2 tried"
            if check["probe_l2_on_edge"]
            else "interior to its (extended) grid"
        )
        lines.append(f"- the base probe's l2 ({size} data, chosen on val_id) is {check['by_size'][size]['probe_l2']:g}, {where}.")
    neutral = check.get("neutral")
    if neutral:
        lines += [
            "",
            f"The same check on the {neutral['n']} cue-neutral OOD pairs (the cue on both responses or on neither, so the "
            "ID-only shortcut says nothing there):",
            "",
            "| probe_ood_base | probe_ood_after_vanilla | likelihood_judge_ood | vanilla_ood |",
            "|---|---|---|---|",
            f"| {neutral['probe_ood_base']:.3f} | {neutral['probe_ood_after_vanilla']:.3f} | "
            f"{neutral['likelihood_judge_ood']:.3f} | {neutral['vanilla_ood']:.3f} |",
            "",
        ]
        lines += [f"- {line}" for line in world_check_findings(neutral)]
    return [*lines, ""]


def render_ood_split(split: dict) -> list[str]:
    """The OOD split section: per training size, every model's test_ood accuracy by where the cue sits and by kind
    (mean over seeds), with the pairs per cell."""
    from rewardlab.ood_split import ALL, CUE_CELLS, KINDS

    columns = [(cue, kind) for cue in (*CUE_CELLS, ALL) for kind in (*KINDS, ALL)]
    lines = [
        "## OOD accuracy taken apart: where the shortcut cue sits x what is new",
        "",
        "Cue: chosen_only / rejected_only (only that response ends with the full stop the gold reward ignores, which ID "
        "data ties to the chosen side) / neutral (both or neither). Kind: new_family (a family no preference data grades) "
        "/ new_phrasing (an ID family in a new prompt style). Mean over seeds; the per-seed tables are in results.json.",
        "",
    ]
    sizes = list(next(iter(split.values())))
    for size in sizes:
        first = next(iter(split.values()))[size]["mean"]
        lines += [
            f"{size} data:",
            "",
            "| model | " + " | ".join(f"{cue} / {kind}" for cue, kind in columns) + " |",
            "|---" * (1 + len(columns)) + "|",
            "| pairs | " + " | ".join(str(first[cue][kind]["n"]) for cue, kind in columns) + " |",
        ]
        for name, per_size in split.items():
            mean = per_size[size]["mean"]
            cells = [_fmt(mean[cue][kind]["accuracy"]) for cue, kind in columns]
            lines.append(f"| {ROW_LABELS.get(name, name)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render_alpha_curve(curve: dict, selection: dict, compared: list[dict] | None = None, family: dict | None = None) -> list[str]:
    """GRM's regulariser strength as a curve: each GRM variant's accuracy at every alpha of the demo, the alpha its
    headline row keeps (chosen on val_id; an ablation, not a choice made on test or OOD numbers) and, where the results
    have them, each point against vanilla on test_ood, paired by seed (Holm across the curve's comparisons)."""
    lines = [
        "## GRM's regulariser strength: accuracy against alpha",
        "",
        "Each GRM variant at every alpha (mean over seeds); the table above keeps, per variant and size, the alpha "
        "chosen on val_id ("
        + "; ".join(f"{size}: {pick['rule']}" for size, pick in next(iter(selection.values())).items())
        + "). The test columns at the other alphas are an ablation, not a choice.",
        "",
        "| variant | size | alpha | val_id | test_id | test_ood | test_ood - vanilla [interval] | verdict (Holm) | kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    against = {(c["variant"], c["alpha"], c["size"]): c for c in compared or [] if c["eval_set"] == "ood"}
    for name, sizes in curve.items():
        for size, sets in sizes.items():
            for i, point in enumerate(sets["val"]):
                alpha = point["alpha"]
                kept = "yes" if name in selection and selection[name][size]["alpha"] == alpha else ""
                cells = [_fmt(sets[split][i]["mean"]) for split in ("val", "id", "ood")]
                c = against.get((name, alpha, size))
                paired = [f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", c["verdict_holm"]] if c else ["-", "-"]
                label = "-" if alpha is None else f"{alpha:g}"
                lines.append(f"| {name} | {size} | {label} | " + " | ".join(cells + paired) + f" | {kept} |")
    if family:
        lines += [
            "",
            f"{family['size']} comparisons along the curve, judged together (Holm): {family['verdicts_holm']} pass (alone: "
            f"{family['verdicts_alone']}; chance alone would pass about {family['chance_passes_alone']:.1f}).",
        ]
    return [*lines, "", "![accuracy vs alpha](alpha_curve.png)", ""]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_report(results: dict) -> str:
    cfg = results["config"]
    lines = [
        "# rewardlab demo report",
        "",
        f"Mode: {'quick' if cfg['quick'] else 'full'}; seeds: {cfg['seeds']} (reward models), {cfg['ppo_seeds']} (PPO "
        "comparisons); "
        f"label noise {cfg['label_noise']}; sizes {cfg['sizes']}. All numbers below come from this run.",
        "",
        "## Base policy",
        "",
        f"Gold reward of one sample per prompt (temperature 0.7): ID {results['base_policy']['gold_id']['mean_gold']:.3f}, "
        f"OOD {results['base_policy']['gold_ood']['mean_gold']:.3f}.",
        "",
    ]
    if "world_check" in results:
        lines += render_world_check(results["world_check"])
    lines += ["## Reward models: pairwise accuracy (mean ± std over seeds)", ""]
    table = results["reward_models"]
    sizes = list(next(iter(table.values())))
    header = "| variant | " + " | ".join(f"{s} ID | {s} OOD" for s in sizes) + " |"
    lines += [header, "|---" * (1 + 2 * len(sizes)) + "|"]
    for variant, cells in table.items():
        alphas = sorted({cells[s]["alpha"] for s in sizes if "alpha" in cells[s]})
        row = [ROW_LABELS.get(variant, variant) + (f" (alpha {' / '.join(f'{a:g}' for a in alphas)})" if alphas else "")]
        row += [with_spread(cells[s][sp]) for s in sizes for sp in ("id", "ood")]
        lines.append("| " + " | ".join(row) + " |")
    note = (
        "One head (linear, dropout 0.1) for every variant of the main rows; each model trained until its ID validation "
        "accuracy stopped improving and kept at its best."
    )
    if FROZEN in table:
        note += " The frozen backbone has no seed (a convex fit)."
    if any(name in table for name in OFFICIAL_PAIRING):
        note += " The extra rows pair the variants as the official GRM code does."
    lines += ["", note]
    training = results.get("reward_model_training")
    if training:
        lines += ["", "Epochs kept by ID validation (mean over seeds; epochs run in brackets):", ""]
        lines += ["| variant | " + " | ".join(sizes) + " |", "|---" * (1 + len(sizes)) + "|"]
        for variant, per_size in training.items():
            cells = [
                f"{statistics.fmean(r['epoch_kept'] for r in per_size[s]):.1f} "
                f"({statistics.fmean(r['epochs_run'] for r in per_size[s]):.1f})"
                for s in sizes
            ]
            lines.append(f"| {ROW_LABELS.get(variant, variant)} | " + " | ".join(cells) + " |")
    lines += ["", "![reward-model accuracy](rm_accuracy.png)", ""]
    if "alpha_curve" in results:
        lines += render_alpha_curve(
            results["alpha_curve"], results["alpha_selection"], results.get("alpha_comparisons"),
            results.get("alpha_comparisons_family"),
        )  # fmt: skip
    if "ood_split" in results:
        lines += render_ood_split(results["ood_split"])
    lines += render_report_bon(results.get("bon", {}))
    lines += render_ppo_section(results["ppo"])
    if "prm" in results:
        lines += render_prm(results["prm"])
    lines += ["", "## Where this small world agrees or disagrees with the papers", ""]
    lines += [f"- {f}" for f in results["findings"]]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()), ""]
    return "\n".join(lines)

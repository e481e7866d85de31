"""`rewardlab study`: one option per StudyFields field (the grid, and the train-rm settings every cell shares), and/or a
YAML config file; flags given on the command line win over the file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardlab.commands.common import config_command, user_errors
from rewardlab.config import StudyFields
from rewardlab.progress import quiet_libraries

if TYPE_CHECKING:
    from rewardlab.study import StudyConfig


def run(cfg: StudyConfig) -> None:
    from rewardlab.study import run_study

    with user_errors():
        quiet_libraries()
        results = run_study(cfg)
    for c in results["comparisons"]:
        alpha = f" alpha {c['alpha']:g}" if c["alpha"] is not None else ""
        size = f" size {c['size']}" if c["size"] is not None else ""
        print(
            f"{c['variant']}{alpha}{size} vs vanilla on {c['eval_set']}: diff {c['diff']:+.3f} "
            f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], p {c['p_mcnemar']:.2g} (Holm {c['p_holm']:.2g}): {c['verdict_holm']}"
        )
    family = results["family"]
    passed, alone = family["verdicts_holm"], family["verdicts_alone"]
    print(f"{passed} of {family['size']} comparisons pass with Holm's adjustment ({alone} alone)")
    print(f"wrote {cfg.output_dir}/results.json, table.md, alpha_curve.png, id_vs_ood.png, cells/")


study = config_command(
    StudyFields,
    run,
    build="rewardlab.study:StudyConfig",
    precheck=StudyFields.check_output,
    doc="The GRM paper's table on any model and data: variants x alphas x seeds x training sizes, model selection on ID "
    "validation, every cell on every eval set, each variant against vanilla paired by seed (resumable).",
    name="study",
)

"""The paper's ablations as data: which arms each study trains, and how an arm becomes a recipe.

Every arm is the official configuration plus a few dotted overrides, so two arms of one study
differ only in what the study varies. The CPU arms train the quickstart's tiny model on its data;
the cluster arms are the shipped 1B stage-2 recipe with the same overrides and one budget.

* ``mask``: temporal tube masking (official) against an independent random mask per latent frame
  at the same ratio schedule (``ardf.mask_pattern``).
* ``rope``: MM-RoPE with the tokenizer-scaled 3D positions (official), MM-RoPE with unscaled
  positions, contiguous 3D RoPE (t:h:w = 2:3:3 frequency sections) and plain 1D RoPE.
* ``rho-inf``: one official model, sampled with the history partially observed at each
  ``--history-mask-ratio`` (``RHO_INF``); 0 is full history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[2]
CLUSTER_BASE = REPO / "examples" / "recipes" / "lumos_1b_stage2-joint-256p_8gpu_h100_bf16.yaml"
CLUSTER_RECIPES = REPO / "examples" / "ablations" / "recipes"
CLUSTER_ITERS = 20000
"""One budget for every cluster arm: optimizer steps of the 1B stage-2 recipe, from scratch."""
RHO_INF = (0.0, 0.3, 0.5, 0.7, 0.9)
"""The ρ_inf values of the rho-inf study (0: the whole history observed; 0.7: the official value)."""


@dataclass(frozen=True)
class Arm:
    """One setting of a study: a name, what it is, and its overrides of the official recipe."""

    name: str
    label: str
    overrides: Dict[str, object] = field(default_factory=dict)

    @property
    def is_official(self) -> bool:
        """The official configuration (no override): shared by the studies, trained once."""
        return not self.overrides


OFFICIAL = Arm("official", "official (tube mask, MM-RoPE, positions x(4, 8, 8))")
STUDIES: Dict[str, Tuple[Arm, ...]] = {
    "mask": (
        Arm("official", "tube mask (official)"),
        Arm("random_mask", "random mask per frame", {"ardf.mask_pattern": "random"}),
    ),
    "rope": (
        Arm("official", "MM-RoPE, positions x(4, 8, 8) (official)"),
        Arm("mm_rope_unscaled", "MM-RoPE, positions x(1, 1, 1)", {"model.rope_position_scale": [1, 1, 1]}),
        Arm("rope_3d_contiguous", "3D RoPE, contiguous sections", {"model.rope_variant": "3d_contiguous"}),
        Arm("rope_1d", "1D RoPE", {"model.rope_variant": "1d"}),
    ),
    "rho-inf": (OFFICIAL,),
}
STUDY_NAMES = tuple(STUDIES)


@dataclass(frozen=True)
class CpuSettings:
    """Sizes of the CPU studies."""

    train_iters: int
    eval_interval: int
    eval_iters: int
    generate_steps: int
    prompts: int
    """Training windows the rho-inf study prompts with: their first frame (I2V), their caption (T2V)."""


FULL = CpuSettings(train_iters=300, eval_interval=25, eval_iters=2, generate_steps=12, prompts=4)
SMOKE = CpuSettings(train_iters=20, eval_interval=10, eval_iters=1, generate_steps=2, prompts=1)


def cpu_recipe(arm: Arm, s: CpuSettings, base: Dict[str, Dict[str, object]], seed: int = 0
               ) -> Dict[str, Dict[str, object]]:
    """The arm as a one-process CPU recipe: ``base`` (the quickstart's tiny model on its data, its
    ``train_recipe``: one data order for every arm) with the arm's overrides, ``train.seed`` =
    ``seed`` (shared by the arms of a seed: initialization, data order, mask keys) and one
    checkpoint at the end."""
    recipe = {section: dict(values) for section, values in base.items()}
    recipe["checkpoint"]["save_interval"] = s.train_iters
    recipe["train"]["seed"] = seed
    for key, value in arm.overrides.items():
        section, name = key.split(".")
        recipe[section][name] = value
    return recipe


def arm_directory(out: Path, arm: Arm, seed: int = 0) -> Path:
    """Where an arm trains: ``OUT/arms/<arm>`` for seed 0, ``OUT/arms/<arm>-seed<k>`` for seed k."""
    return out / "arms" / (arm.name if seed == 0 else f"{arm.name}-seed{seed}")


def studies_of(arm: Arm) -> List[str]:
    """The studies an arm belongs to (the official arm: every study)."""
    return [study for study, arms in STUDIES.items() if arm.name in {a.name for a in arms}]


def cluster_recipe_text(arm: Arm) -> str:
    """The arm's 1B cluster recipe: the shipped stage-2 recipe, ``CLUSTER_ITERS`` steps from
    scratch, plus the arm's overrides; a header says what it is."""
    from lumos_megatron.config import dump_config, load_recipe, set_value, validate_config

    cfg = load_recipe(CLUSTER_BASE)
    set_value(cfg, "train.train_iters", CLUSTER_ITERS)
    for key, value in arm.overrides.items():
        set_value(cfg, key, value)
    validate_config(cfg)
    changed = ", ".join(f"{k}={v}" for k, v in arm.overrides.items()) or "nothing (the official arm)"
    header = [
        f"# Ablation arm {arm.name!r} ({', '.join(studies_of(arm))}): {arm.label}.",
        f"# Written by `python examples/ablations/run.py --write-recipes` from",
        f"# examples/recipes/{CLUSTER_BASE.name}: the same model, data and optimizer for every arm,",
        f"# {CLUSTER_ITERS} steps from scratch (an empty --load directory), changed: {changed}.",
        "# Replace data.data_path / data.image_data_path with your pre-tokenized 256p prefixes.",
    ]
    return "\n".join(header) + "\n" + dump_config(cfg)


def recipe_name(arm: Arm) -> str:
    """File name of an arm's cluster recipe (arm names are unique across studies)."""
    return f"{arm.name}.yaml"


def submit_lines(study: str) -> List[str]:
    """The sbatch commands of a study's cluster arms (run from the repository root)."""
    if study == "rho-inf":
        lines = []
        for rho in RHO_INF:
            tag = f"rho_{rho:g}".replace(".", "p")
            job = "ablation-" + tag.replace("_", "-")
            lines.append(f"LOAD=runs/ablations/official/checkpoints PROMPTS=${{PROMPTS:?a JSONL of I2V prompts}} "
                         f"TASK=i2v OUT=runs/ablations/rho_inf/{tag} sbatch --job-name={job} --nodes=1 "
                         f"examples/slurm/generate_eval_torchrun.sbatch --history-mask-ratio {rho:g}")
        return lines
    # One run directory and one job name per arm: the official arm, shared by the studies, queues
    # behind itself (the launchers' singleton dependency) and then resumes its finished run.
    return [f"RECIPE=examples/ablations/recipes/{recipe_name(arm)} OUT=runs/ablations/{arm.name} sbatch "
            f"--job-name=ablation-{arm.name.replace('_', '-')} --nodes=1 examples/slurm/train_torchrun.sbatch"
            for arm in STUDIES[study]]


def submit_script(study: str) -> str:
    """``submit_<study>.sh``: every cluster arm of the study, from the repository root."""
    what = ("generates the same I2V prompts with the official arm's model at each rho_inf; "
            "set PROMPTS" if study == "rho-inf" else "trains every arm with the same budget")
    return ("#!/bin/bash\n"
            f"# Ablation {study!r} on SLURM: {what}.\n"
            "# Written by `python examples/ablations/run.py --write-recipes`.\n"
            "set -euo pipefail\n"
            'cd "$(dirname "$0")/../../.."\n'
            "mkdir -p logs\n" + "\n".join(submit_lines(study)) + "\n")


def write_cluster_files(directory: Path) -> List[Path]:
    """Write every cluster recipe and submit script into ``directory``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    arms = {OFFICIAL.name: OFFICIAL, **{a.name: a for group in STUDIES.values() for a in group if not a.is_official}}
    for arm in arms.values():
        path = directory / recipe_name(arm)
        path.write_text(cluster_recipe_text(arm))
        written.append(path)
    for study in STUDIES:
        path = directory / f"submit_{study.replace('-', '_')}.sh"
        path.write_text(submit_script(study))
        path.chmod(0o755)
        written.append(path)
    return written

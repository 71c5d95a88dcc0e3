"""A scaling ladder end to end on a CPU: make_ladder → local training runs → collect → fit.

    python examples/scaling/run_mini_ladder.py [--out runs/mini_ladder] [--smallest] [--bootstrap B]
        [--isoflop [C ...]]

Derives tiny Lumos models from examples/recipes/tiny_cpu.yaml (mock 2-frame 4x4-latent video
samples, 72 tokens each, in 32 classes that each have their own code distribution), lays them out
with lumos-ladder (tools/scaling/make_ladder.py: the same rules as a cluster ladder; sizes are
non-embedding parameters), trains each run in sequence with ``python -m lumos_megatron.train``
instead of sbatch (evaluating several times per run so that ``lm loss validation`` exists),
collects the runs with lumos-collect and fits them with lumos-fit, every tool at its defaults (each
run as ``python -m lumos_megatron.cli.<command>``).
Default: 3 sizes x 3 tokens-per-parameter budgets (about 6-7 min on 2 idle cores); --smallest: 3
sizes x 2 budgets of very few iterations (about 75 s), what the end-to-end test runs.

--isoflop lays the ladder out by compute budgets instead (Approach 2, IsoFLOP profiles): every
family member whose tokens per parameter fall in [0.02, 100] at each budget C (default 1e11 and
3e11 FLOPs: 10 runs, 5 sizes per budget; with --smallest 1e10 and 3e10 and at most 10 tokens per
parameter: 6 runs, about 1 min), so each budget is one IsoFLOP profile.

Outputs under --out: ladder.json, <run>/{recipe.yaml,train.log,tensorboard/}, runs.csv and
fit/ (fit.json, report.md, plots). The loss falls with size and data because the models must
learn the classes (``data.mock_classes``), but at this size that is a learning transition more
than a power law: this exercises the pipeline, it does not measure a scaling law.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

COMMON = ["--base", "examples/recipes/tiny_cpu.yaml", "--set", "data.seq_length=72",
          "--n-min", "1e4", "--n-max", "3e5", "--num-sizes", "3", "--size-by", "non-embedding",
          "--head-dim", "32", "--aspect", "48", "--gqa-ratio", "4", "--ffn-ratio", "2.75",
          "--ffn-multiple", "16", "--nodes", "1", "--gpus-per-node", "1", "--eval-samples", "64",
          "--prefix", "mini-"]
SETTINGS = {
    "default": ["--tokens-per-param", "1", "2", "4", "--evals-per-run", "4"],
    "smallest": ["--tokens-per-param", "0.1", "0.2", "--evals-per-run", "2"],
}
# IsoFLOP ladders: every member in range (no --num-sizes), a finer family (aspect 64), budgets by compute.
ISOFLOP_COMMON = ["--base", "examples/recipes/tiny_cpu.yaml", "--set", "data.seq_length=72",
                  "--n-min", "1e4", "--n-max", "2e6", "--head-dim", "32", "--aspect", "64", "--gqa-ratio", "4",
                  "--ffn-ratio", "2.75", "--ffn-multiple", "16", "--nodes", "1", "--gpus-per-node", "1",
                  "--eval-samples", "64", "--prefix", "mini-"]
ISOFLOP_BUDGETS = {"default": ["1e11", "3e11"], "smallest": ["1e10", "3e10"]}
# --smallest leaves out the many-token runs of the smallest member (tokens per parameter > 10).
ISOFLOP_RUNS = {"default": ["--evals-per-run", "3", "--tpp-range", "0.02", "100"],
                "smallest": ["--evals-per-run", "2", "--tpp-range", "0.02", "10"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/mini_ladder", help="output directory")
    p.add_argument("--smallest", action="store_true", help="3 sizes x 2 tiny budgets (the e2e test)")
    p.add_argument("--isoflop", nargs="*", metavar="C", default=None,
                   help="IsoFLOP ladder: compute budgets in model FLOPs (default 1e11 3e11; --smallest 1e10 3e10)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for lumos-fit")
    p.add_argument("--mock-classes", type=int, default=32,
                   help="classes of the mock samples (data.mock_classes; 0: i.i.d. codes)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                   help="OMP threads of each training process")
    return p.parse_args(argv)


def _run(cmd, log=None, env=None) -> None:
    """Run a step from the repository root; exit with its status (and log tail) when it fails."""
    with (open(log, "w") if log else open(os.devnull, "w")) as sink:
        proc = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, text=True,
                              stdout=sink if log else None, stderr=subprocess.STDOUT if log else None)
    if proc.returncode != 0:
        tail = Path(log).read_text()[-3000:] if log else ""
        sys.exit(f"run_mini_ladder: {' '.join(map(str, cmd[:4]))} ... failed ({proc.returncode})\n{tail}")


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out).resolve()
    py = sys.executable
    size = "smallest" if args.smallest else "default"
    if args.isoflop is not None:
        ladder = [*ISOFLOP_COMMON, "--isoflop", *(args.isoflop or ISOFLOP_BUDGETS[size]), *ISOFLOP_RUNS[size]]
    else:
        ladder = [*COMMON, *SETTINGS[size]]
    _run([py, "-m", "lumos_megatron.cli.ladder", "--out", out, *ladder, "--set", f"data.mock_classes={args.mock_classes}"])
    runs = json.loads((out / "ladder.json").read_text())["runs"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    for k, run in enumerate(runs, 1):
        t0 = time.perf_counter()
        print(f"[{k}/{len(runs)}] {run['name']}: N={run['non_embedding_params']} non-embedding, "
              f"D={run['tokens']} tokens, {run['train_iters']} iterations of {run['global_batch_size']} "
              f"samples ...", end=" ", flush=True)
        cpu0 = _children_cpu_s()
        cmd = [py if c == "python" else c for c in run["local_command"]]
        _run(cmd, log=Path(run["run_dir"]) / "train.log", env=env)
        print(f"{time.perf_counter() - t0:.0f} s ({_children_cpu_s() - cpu0:.0f} s CPU)", flush=True)
    csv_path = out / "runs.csv"
    _run([py, "-m", "lumos_megatron.cli.collect", *[r["run_dir"] for r in runs], "--out", csv_path])
    # No --params-column: runs.csv's params is the ladder's own measure (non-embedding here).
    fit_args = []
    if args.bootstrap is not None:
        fit_args += ["--bootstrap", str(args.bootstrap)]
    _run([py, "-m", "lumos_megatron.cli.fit", "--runs", csv_path, "--out", out / "fit", *fit_args])
    print(f"mini ladder done in {time.perf_counter() - start:.0f} s ({_children_cpu_s():.0f} s CPU): "
          f"{len(runs)} runs, {csv_path}, "
          f"{out / 'fit' / 'fit.json'}, {out / 'fit' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

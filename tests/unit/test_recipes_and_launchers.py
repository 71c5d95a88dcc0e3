"""The shipped recipes and launchers: every recipe loads and validates through the real loader,
names follow ``<model>_<size>_<stage>_<ngpu>gpu_<hardware>_<dtype>.yaml`` and fit their GPU count,
the official hyper-parameters (docs/method.md §6.3) are what the recipes say, and the SLURM/torchrun
scripts are valid bash. Their dry runs (fake ``srun``/``scontrol``/``squeue``/``torchrun`` on
PATH) produce a trainer command line that the loader accepts (and, for the evaluation-set
launcher, a generate command line over prompts x seeds), and the signal path of the
single-node launcher really delivers SIGUSR1 to the workers.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumos_megatron.config import head_dim, load_recipe, parse_cli, validate_config
from lumos_megatron.config.loader import BOOL_FLAG_ALIASES, FLAG_ALIASES
from lumos_megatron.platform.parallel import resolve_layout

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "examples" / "recipes"
SLURM = REPO / "examples" / "slurm"
BASH = shutil.which("bash")

# The laptop quickstart recipe keeps the short name the README and tests use.
NON_PRODUCTION = {"tiny_cpu.yaml"}
NAME_RE = re.compile(
    r"^(?P<model>[a-z][a-z0-9]*)_(?P<size>\d+(?:\.\d+)?[mb])_"
    r"(?P<stage>stage(?P<stage_no>\d+)-(?P<data>[a-z]+)-(?P<res>\d+)p)_"
    r"(?P<ngpu>\d+)gpu_(?P<hardware>[a-z0-9]+)_(?P<dtype>bf16|fp16|fp32)\.yaml$"
)
# docs/method.md §6.3: (stage, size) -> lr (= min_lr); per-stage max_seq_len.
OFFICIAL_LR = {(1, "1b"): 5e-5, (1, "3b"): 1e-4, (2, "1b"): 2.5e-5, (2, "3b"): 2.5e-5}
OFFICIAL_MAX_SEQ = {1: 32768, 2: 65536}
STAGE_DATA = {1: "image", 2: "joint"}
# Pre-tokenization target sizes (docs/method.md §7): 256p -> 352 -> 121 patches, 384p -> 528 -> 256.
PATCHES = {256: (352 // 32) ** 2, 384: (528 // 32) ** 2}
KEPT_LATENT_FRAMES = 7
MIN_TEXT_ROOM = 1024  # tokens left for caption + prefix in the longest sample

ALL_RECIPES = sorted(RECIPES.glob("*.yaml"))
PRODUCTION = [p for p in ALL_RECIPES if p.name not in NON_PRODUCTION]
LIB = SLURM / "_lib.sh"  # sourced by the sbatch scripts, not a launcher
SCRIPTS = sorted(p for p in list(SLURM.glob("*.sh")) + list(SLURM.glob("*.sbatch")) if p != LIB)
SBATCH = sorted(SLURM.glob("*.sbatch"))
TRAIN_SCRIPTS = [p for p in SCRIPTS if p.name.startswith("train_")]  # the others generate
EXIT_FLAG = "--exit-duration-in-mins"


def _ids(paths):
    return [p.name for p in paths]


# --------------------------------------------------------------------------------- recipes


def test_there_are_official_recipes_for_both_sizes_and_all_stages():
    names = {NAME_RE.match(p.name).group("size", "stage") for p in PRODUCTION}
    for size in ("1b", "3b"):
        for stage in ("stage1-image-256p", "stage2-joint-256p", "stage2-joint-384p"):
            assert (size, stage) in names, f"no {size} {stage} recipe in {RECIPES}"


@pytest.mark.parametrize("path", ALL_RECIPES, ids=_ids(ALL_RECIPES))
def test_recipe_loads_and_validates(path):
    cfg = parse_cli(["--config", str(path)])  # loader + validate_config, as the trainer does
    again = load_recipe(path)
    validate_config(again)
    assert again == cfg


@pytest.mark.parametrize("path", PRODUCTION, ids=_ids(PRODUCTION))
def test_recipe_name_follows_convention_and_fits_its_gpus(path):
    m = NAME_RE.match(path.name)
    assert m, f"{path.name} does not match <model>_<size>_<stage>_<ngpu>gpu_<hardware>_<dtype>.yaml"
    cfg = load_recipe(path)
    assert cfg.train.precision == m["dtype"]
    assert STAGE_DATA[int(m["stage_no"])] == m["data"]
    ngpu = int(m["ngpu"])
    p = cfg.parallel
    model_ranks = p.tensor_model_parallel_size * p.pipeline_model_parallel_size * p.context_parallel_size
    assert ngpu % model_ranks == 0, f"TP x PP x CP = {model_ranks} does not divide {ngpu} GPUs"
    # The full world-size check the trainer runs first (DP and batch divisibility included).
    layout = resolve_layout(cfg, ngpu)
    assert layout.dp * model_ranks == ngpu
    assert p.tensor_model_parallel_size <= 8, "TP beyond one 8-GPU NVLink domain"
    # GPU recipes use FlexAttention (no L x L mask); SDPA only where CP needs it.
    assert cfg.model.attention_backend == "flex" or p.context_parallel_size > 1


@pytest.mark.parametrize("path", PRODUCTION, ids=_ids(PRODUCTION))
def test_recipe_carries_the_official_hyper_parameters(path):
    m = NAME_RE.match(path.name)
    stage, size = int(m["stage_no"]), m["size"]
    cfg = load_recipe(path)
    t = cfg.train
    assert t.lr == pytest.approx(OFFICIAL_LR[(stage, size)])
    assert t.min_lr == t.lr, "official schedule is constant after warmup"
    assert (t.weight_decay, t.weight_decay_all_params, t.clip_grad) == (0.1, True, 4.0)
    assert (t.adam_beta1, t.adam_beta2, t.adam_eps, t.seed) == (0.9, 0.95, 1e-8, 0)
    assert t.lr_warmup_iters > 0
    assert cfg.model.max_position_embeddings == OFFICIAL_MAX_SEQ[stage]
    assert cfg.model.vocab_size == 129536 and not cfg.model.tie_embeddings
    assert cfg.model.rope_variant == "mm_rope" and head_dim(cfg) % 32 == 0
    a = cfg.ardf
    assert (a.enabled, a.min_mask_ratio, a.cfg_drop_prob, a.max_latent_frames) == (True, 0.7, 0.1, 7)
    assert not cfg.data.mock and cfg.data.data_path, "real runs read pre-tokenized data"


def _longest_frame_block(res: int) -> int:
    """Tokens of one frame block (``3 + H_l*(W_l+1) + 1``) for the worst crop of the staircase:
    w, h multiples of 32 px, w*h <= patches*32^2, aspect ratio <= 4, 8x spatial downsampling."""
    budget = PATCHES[res]
    best = 0
    for pw in range(1, budget + 1):
        for ph in range(1, budget // pw + 1):
            if max(pw, ph) > 4 * min(pw, ph):
                continue
            w_l, h_l = pw * 4, ph * 4
            best = max(best, 3 + h_l * (w_l + 1) + 1)
    return best


@pytest.mark.parametrize("path", PRODUCTION, ids=_ids(PRODUCTION))
def test_recipe_seq_length_holds_the_longest_sample(path):
    m = NAME_RE.match(path.name)
    frames = 1 if m["data"] == "image" else KEPT_LATENT_FRAMES
    visual = frames * _longest_frame_block(int(m["res"]))
    seq = load_recipe(path).data.seq_length
    assert visual + MIN_TEXT_ROOM <= seq, f"{visual} visual tokens leave < {MIN_TEXT_ROOM} for text"
    # ... and is not wildly padded (every sample is padded to seq_length).
    assert seq < 2 * (visual + MIN_TEXT_ROOM)


def _params(cfg) -> float:
    m = cfg.model
    d, groups = head_dim(cfg), m.num_query_groups or m.num_attention_heads
    attn = m.hidden_size * d * (2 * m.num_attention_heads + 2 * groups)
    mlp = 3 * m.hidden_size * m.ffn_hidden_size
    return m.num_layers * (attn + mlp) + 2 * m.vocab_size * m.hidden_size


def test_assumed_shapes_match_the_reported_sizes():
    """The 3B shape is chosen to give the 3.6B reported for the largest model (untied embeddings
    included); the 1B body is about 1B. The recipe headers say so; keep them honest."""
    for path in PRODUCTION:
        cfg, size = load_recipe(path), NAME_RE.match(path.name)["size"]
        total = _params(cfg)
        body = total - 2 * cfg.model.vocab_size * cfg.model.hidden_size
        if size == "3b":
            assert math.isclose(total, 3.6e9, rel_tol=0.02), (path.name, total)
        else:
            assert math.isclose(body, 1.0e9, rel_tol=0.1), (path.name, body)


# ------------------------------------------------------------------------------- launchers


def _sbatch_directives(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#SBATCH"):
            key, _, value = line[len("#SBATCH"):].strip().partition("=")
            out[key] = value.split("#")[0].strip() if value else ""
    return out


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("path", SCRIPTS + [LIB], ids=_ids(SCRIPTS + [LIB]))
def test_script_is_valid_bash(path):
    res = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    if path != LIB:
        assert "set -euo pipefail" in path.read_text()


def test_the_three_launchers_exist():
    names = {p.name for p in SCRIPTS}
    assert {"train_torchrun.sbatch", "train_srun.sbatch", "train_single_node.sh"} <= names


@pytest.mark.parametrize("path", SBATCH, ids=_ids(SBATCH))
def test_sbatch_directives_match_the_launch_style(path):
    d = _sbatch_directives(path)
    assert d.get("--output") == "logs/%x-%j.out"
    assert d.get("--dependency") == "singleton"
    assert "--requeue" in d and d.get("--open-mode") == "append"
    assert re.fullmatch(r"(B:)?USR1@\d+", d.get("--signal", "")), d.get("--signal")
    gpus = int(d["--gpus-per-node"])
    tasks = int(d["--ntasks-per-node"])
    launches_torchrun = '"$TORCHRUN"' in path.read_text()
    assert launches_torchrun == ("torchrun" in path.name)
    if launches_torchrun:
        assert tasks == 1, "torchrun launcher: one task per node (torchrun forks the workers)"
    else:
        assert tasks == gpus, "srun launcher: one task per GPU"


@pytest.mark.parametrize("path", TRAIN_SCRIPTS, ids=_ids(TRAIN_SCRIPTS))
def test_recipes_named_by_scripts_exist_and_validate(path):
    named = re.findall(r"examples/recipes/[\w.\-]+\.yaml", path.read_text())
    assert named, f"{path.name} names no default recipe"
    for rel in named:
        parse_cli(["--config", str(REPO / rel)])


def _known_flag(flag: str) -> bool:
    return flag == "--config" or flag in FLAG_ALIASES or flag in BOOL_FLAG_ALIASES


def test_every_trainer_flag_the_launchers_pass_is_known():
    """A flag the loader does not know would stop every job at start-up."""
    text = "\n".join(p.read_text() for p in SCRIPTS + [LIB])
    used = set(re.findall(r"(?<![\w-])(--(?:save|load|save-interval|tensorboard-dir|config|"
                          r"exit-duration-in-mins))(?![\w-])", text))
    assert EXIT_FLAG in used
    unknown = sorted(f for f in used if not _known_flag(f))
    assert not unknown, f"launchers pass flags the trainer rejects: {unknown}"


# ----------------------------------------------------------------- dry runs with fake tools

FAKE_WORKER = r'''
import json, os, signal, sys, time
out = os.environ["FAKE_OUT"]
if sys.argv[1] == "torchrun":
    # Record our own argv and whether SIGUSR1 reached us as "ignored", then start two workers.
    ignored = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    json.dump({"argv": sys.argv[2:], "usr1_ignored": ignored}, open(f"{out}/torchrun.json", "w"))
    import subprocess
    args = sys.argv[2:]
    train = args[args.index("lumos_megatron.train") + 1:]
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(r), *train]) for r in range(2)]
    sys.exit(max(p.wait() for p in procs))
# worker RANK TRAINER_ARGS...: record the trainer arguments, then either finish at once (write a
# checkpoint tracker like the trainer's) or wait for SIGUSR1 (FAKE_WAIT_FOR_USR1=1).
rank, train = int(sys.argv[2]), sys.argv[3:]
env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
json.dump({"args": train, "env": env}, open(f"{out}/worker{rank}.json", "w"))
def on_usr1(signum, frame):
    open(f"{out}/worker{rank}.usr1", "w").close()
    sys.exit(0)
signal.signal(signal.SIGUSR1, on_usr1)
open(f"{out}/worker{rank}.ready", "w").close()
if os.environ.get("FAKE_WAIT_FOR_USR1") == "1":
    time.sleep(30)
    sys.exit(3)
save = train[train.index("--save") + 1]
if rank == 0:
    open(f"{save}/latest_checkpointed_iteration.txt", "w").write(os.environ.get("FAKE_ITER", "10") + "\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))  # the trainer's exit status (training/exit_codes.py)
'''


def _fake_bin(tmp: Path) -> Path:
    """PATH directory with fake srun/scontrol/squeue/torchrun/python-shim; they log to $FAKE_OUT."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    worker = tmp / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    py = sys.executable
    scripts = {
        # srun: log the call, drop srun's own options, run the command once (stands for N tasks).
        "srun": 'printf "%s\\n" "$@" > "$FAKE_OUT/srun.args"\n'
                'while [[ $# -gt 0 && $1 == -* ]]; do shift; done\nexec "$@"\n',
        "scontrol": 'case "$1" in\n'
                    '  show) printf "node01\\nnode02\\n" ;;\n'
                    '  requeue) echo "$2" > "$FAKE_OUT/requeued" ;;\n'
                    'esac\n',
        "squeue": 'echo "${FAKE_TIME_LEFT:-1-02:03:04}"\n',
        "torchrun": f'exec "{py}" "{worker}" torchrun "$@"\n',
        # The srun launcher runs "$PYTHON -m lumos_megatron.train": be a worker for that, python otherwise.
        "python-shim": f'if [[ $1 == -m && $2 == lumos_megatron.train ]]; then\n'
                       f'  exec "{py}" "{worker}" worker 0 "${{@:3}}"\nfi\nexec "{py}" "$@"\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return bin_dir


def _dry_env(tmp: Path, **extra) -> dict[str, str]:
    out = tmp / "fake_out"
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE"))}
    env.update({
        "PATH": f"{_fake_bin(tmp)}{os.pathsep}{env.get('PATH', '')}",
        "FAKE_OUT": str(out), "PYTHON": str(tmp / "bin" / "python-shim"),
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NNODES": "2",
        "SLURM_SUBMIT_DIR": str(REPO), "SLURM_CPUS_PER_TASK": "64", "OUT": str(tmp / "run"),
    })
    env.update(extra)
    return env


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_torchrun_sbatch_dry_run(tmp_path):
    recipe = "examples/recipes/lumos_3b_stage2-joint-384p_8gpu_h100_bf16.yaml"
    env = _dry_env(tmp_path, RECIPE=recipe)
    res = subprocess.run([BASH, str(SLURM / "train_torchrun.sbatch"), "train.train_iters=20"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    out = Path(env["FAKE_OUT"])
    srun = (out / "srun.args").read_text().split("\n")
    assert "--ntasks-per-node=1" in srun and "--nodes=2" in srun
    tr = json.loads((out / "torchrun.json").read_text())
    assert tr["usr1_ignored"], "torchrun must start with SIGUSR1 ignored"
    argv = tr["argv"]
    assert argv[argv.index("--nnodes") + 1] == "2"
    assert argv[argv.index("--nproc-per-node") + 1] == "8"
    assert argv[argv.index("--rdzv-backend") + 1] == "c10d"
    assert argv[argv.index("--rdzv-endpoint") + 1] == f"node01:{20000 + 4242}"
    train = json.loads((out / "worker0.json").read_text())["args"]
    run = tmp_path / "run"
    assert train[train.index("--save") + 1] == train[train.index("--load") + 1] == str(run / "checkpoints")
    assert train[train.index("--tensorboard-dir") + 1] == str(run / "tensorboard")
    # squeue said 1-02:03:04 left: 1563 min, minus the 10 min margin.
    assert train[train.index(EXIT_FLAG) + 1] == "1553"
    assert train[-1] == "train.train_iters=20", "user arguments come last so that they win"
    cfg = parse_cli(train)  # the exact command line the workers get
    assert cfg.train.exit_duration_in_mins == 1553
    assert (run / "logs").is_dir()
    # The fake trainer saved iteration 10 of 20: the job requeues itself.
    assert (out / "requeued").read_text().strip() == "4242"


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("saved_iter, requeued", [("20", False), ("10", True)])
def test_srun_sbatch_dry_run(tmp_path, saved_iter, requeued):
    env = _dry_env(tmp_path, FAKE_ITER=saved_iter, RANK="3", WORLD_SIZE="5")
    res = subprocess.run([BASH, str(SLURM / "train_srun.sbatch"), "--train-iters", "20"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    out = Path(env["FAKE_OUT"])
    srun = (out / "srun.args").read_text().split("\n")
    assert "--ntasks-per-node=8" in srun
    worker = json.loads((out / "worker0.json").read_text())
    train = worker["args"]
    # torchrun-style variables from the submitting shell must not override SLURM's ranks.
    assert worker["env"]["RANK"] is None and worker["env"]["WORLD_SIZE"] is None
    assert worker["env"]["MASTER_ADDR"] == "node01"
    assert worker["env"]["MASTER_PORT"] == str(20000 + 4242)
    assert train[:2] == ["--config", "examples/recipes/lumos_1b_stage1-image-256p_8gpu_h100_bf16.yaml"]
    parse_cli(train)
    assert (out / "requeued").exists() == requeued


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("status, requeued, says", [("6", True, "hang watchdog"), ("4", False, "no space left"),
                                                    ("5", False, "status 5; not requeueing")])
def test_launcher_requeues_after_a_hang_but_not_after_a_full_disk(tmp_path, status, requeued, says):
    env = _dry_env(tmp_path, FAKE_ITER="10", FAKE_EXIT=status)
    res = subprocess.run([BASH, str(SLURM / "train_srun.sbatch"), "--train-iters", "20"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == int(status), res.stdout + res.stderr
    assert says in res.stderr
    assert (Path(env["FAKE_OUT"]) / "requeued").exists() == requeued


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("left, minutes", [("1-02:03:04", 1563), ("3:59:51", 239), ("45:00", 45),
                                           ("UNLIMITED", None), ("INVALID", None)])
def test_minutes_left_parses_squeue(tmp_path, left, minutes):
    env = _dry_env(tmp_path, FAKE_TIME_LEFT=left)
    res = subprocess.run([BASH, "-c", f'source "{SLURM}/_lib.sh"; lumos_slurm_minutes_left'],
                         env=env, capture_output=True, text=True, timeout=10, check=False)
    if minutes is None:
        assert res.returncode != 0 and res.stdout == ""
    else:
        assert res.returncode == 0 and res.stdout.strip() == str(minutes)


@pytest.mark.skipif(BASH is None or sys.platform != "linux", reason="needs bash and pkill")
def test_single_node_launcher_forwards_sigusr1_to_the_workers(tmp_path):
    env = _dry_env(tmp_path, FAKE_WAIT_FOR_USR1="1", GPUS_PER_NODE="2")
    proc = subprocess.Popen([BASH, str(SLURM / "train_single_node.sh")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Path(env["FAKE_OUT"])
    try:
        deadline = time.monotonic() + 20
        while not all((out / f"worker{r}.ready").exists() for r in (0, 1)):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "fake workers never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert rc == 0, log
    assert all((out / f"worker{r}.usr1").exists() for r in (0, 1)), log
    assert json.loads((out / "torchrun.json").read_text())["usr1_ignored"]


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_generate_eval_sbatch_dry_run(tmp_path):
    from lumos_megatron.generate import _parser
    from lumos_megatron.inference.prompt_file import read_prompt_file

    (tmp_path / "prompts.txt").write_text("a red ball rolls\na cat sleeps\n")
    record = tmp_path / "fake_torchrun"  # records its arguments instead of starting workers
    record.write_text(f'#!/bin/bash\n"{sys.executable}" -c "import json, sys; '
                      f'json.dump(sys.argv[1:], open(\'{tmp_path}/torchrun.json\', \'w\'))" "$@"\n')
    record.chmod(0o755)
    env = _dry_env(tmp_path, LOAD=str(tmp_path / "ckpt"), PROMPTS=str(tmp_path / "prompts.txt"), TP="2",
                   TORCHRUN=str(record), SLURM_JOB_NAME="eval")
    res = subprocess.run([BASH, str(SLURM / "generate_eval_torchrun.sbatch"), "--batch-size", "4"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "8 model copies" in res.stdout  # 2 nodes x 8 GPUs / TP 2
    argv = json.loads((tmp_path / "torchrun.json").read_text())
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--nproc-per-node") + 1] == "8"
    args = _parser().parse_args(argv[argv.index("lumos_megatron.generate") + 1:])
    assert args.tensor_model_parallel_size == 2 and args.batch_size == 4 and args.task == "t2v"
    records, skipped = read_prompt_file(args.prompts)
    assert not skipped and len(records) == 10  # 2 prompts x the 5 default seeds
    assert [(r.caption, r.seed) for r in records[4:6]] == [("a red ball rolls", 4), ("a cat sleeps", 0)]
    assert args.out == str(tmp_path / "run")

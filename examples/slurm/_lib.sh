# Helpers shared by the SLURM launchers in this directory. Source it; do not run it.
#
# The sbatch scripts find this file through $REPO_DIR (default: the submission directory), and
# not through their own path: inside a job, SLURM runs a copy of the batch script from its spool
# directory.

# Minutes left before this job's wall-clock limit, from squeue's %L ("[D-]HH:MM:SS", "MM:SS").
# Prints nothing and returns 1 when squeue cannot say (no limit, or squeue missing).
lumos_slurm_minutes_left() {
    local left d=0 h=0 m=0 s=0
    local -a parts
    left=$(squeue -h -j "${SLURM_JOB_ID:?}" -o %L 2>/dev/null) || return 1
    case "$left" in
        "" | *INVALID* | *UNLIMITED* | NOT_SET) return 1 ;;
    esac
    if [[ $left == *-* ]]; then
        d=${left%%-*}
        left=${left#*-}
    fi
    IFS=: read -r -a parts <<<"$left"
    case ${#parts[@]} in
        3) h=${parts[0]} m=${parts[1]} s=${parts[2]} ;;
        2) m=${parts[0]} s=${parts[1]} ;;
        1) s=${parts[0]} ;;
        *) return 1 ;;
    esac
    # 10# stops "08" and "09" from being read as bad octal numbers.
    echo $(((10#$d * 86400 + 10#$h * 3600 + 10#$m * 60 + 10#$s) / 60))
}

# Arguments for --exit-duration-in-mins. The trainer stops, saves and exits 0 after this many
# minutes, which leaves EXIT_MARGIN_MINS before SLURM's limit. The margin must cover one
# iteration (the stop is taken after the current one) plus a checkpoint save.
# EXIT_DURATION_MINS=auto (default) derives it from the job's time left; a number is used as is;
# "none" (or an unknown limit) passes nothing, and the SIGUSR1 sent 300 s before the limit is the
# only warning.
lumos_exit_duration_args() {
    local want=${EXIT_DURATION_MINS:-auto} margin=${EXIT_MARGIN_MINS:-10} left
    if [[ $want == none ]]; then
        return 0
    fi
    if [[ $want == auto ]]; then
        left=$(lumos_slurm_minutes_left) || return 0
        want=$((left - margin))
        if ((want < 1)); then
            echo "lumos: only ${left} min left in the job; not passing --exit-duration-in-mins" >&2
            return 0
        fi
    fi
    printf '%s\n' --exit-duration-in-mins "$want"
}

# Iteration named by Megatron's latest_checkpointed_iteration.txt under $1, or -1 without one.
lumos_latest_iteration() {
    local latest_file="$1/latest_checkpointed_iteration.txt" it
    it=$(tr -dc '0-9' <"$latest_file" 2>/dev/null) || true
    echo "${it:--1}"
}

# Final iteration of the run: the recipe and overrides in "$@" (e.g. --config R --train-iters N),
# resolved by the loader the trainer uses. train_samples, when set, overrides train_iters.
lumos_train_iters() {
    "${PYTHON:-python}" -c '
import math, sys
from lumos_megatron.config.loader import parse_cli
t = parse_cli(sys.argv[1:], validate=False).train
samples = getattr(t, "train_samples", None)
print(t.train_iters if samples is None else math.ceil(samples / t.global_batch_size))' "$@"
}

# Put this job back in the queue when the trainer exited cleanly before train_iters. That
# happens on SIGUSR1 or --exit-duration-in-mins, and after the hang watchdog (status 6; a full
# checkpoint disk, status 4, needs a person instead). The requeued job resumes from --load. It keeps
# its job id and appends to the same log (--open-mode=append).
# Arguments: exit status, checkpoint dir, iteration before this job started, then the recipe and
# overrides (--config R ...). The job is requeued only if it saved a newer checkpoint: a run that
# stops without progress would otherwise be requeued forever. AUTO_REQUEUE=0 turns this off; you
# can then submit the next job yourself, and --dependency=singleton keeps it from overlapping this one.
lumos_requeue_if_unfinished() {
    local rc=$1 ckpt_dir=$2 start_iter=$3 latest target
    shift 3
    # Exit statuses: lumos_megatron/training/exit_codes.py, docs/failure_modes.md.
    case $rc in
        0) ;;
        6) echo "lumos: the hang watchdog ended training (status 6; every rank's stacks are in the log)" >&2 ;;
        4) echo "lumos: no space left for checkpoints (status 4): free space, then resubmit; not requeueing" >&2
           return "$rc" ;;
        *) echo "lumos: training exited with status $rc; not requeueing" >&2
           return "$rc" ;;
    esac
    [[ ${AUTO_REQUEUE:-1} == 1 ]] || return 0
    latest=$(lumos_latest_iteration "$ckpt_dir")
    if ! target=$(lumos_train_iters "$@"); then
        echo "lumos: could not resolve train_iters; not requeueing" >&2
        return 0
    fi
    echo "lumos: newest checkpoint: iteration $latest of $target (was $start_iter at job start)" >&2
    if ((latest >= target)); then
        echo "lumos: train_iters reached; done" >&2
    elif ((latest <= start_iter)); then
        echo "lumos: no new checkpoint in this job; not requeueing (check the log)" >&2
    else
        echo "lumos: stopped before train_iters; requeueing job ${SLURM_JOB_ID}" >&2
        scontrol requeue "${SLURM_JOB_ID:?}"
    fi
    return "$rc"
}

# Shared by the stub SLURM commands: a state folder with one record per job.
#   $STUB_SLURM_STATE/next_id            last job id handed out
#   $STUB_SLURM_STATE/jobs/<id>.name     job name (--job-name; Snakemake's run uuid)
#   $STUB_SLURM_STATE/jobs/<id>.state    RUNNING/COMPLETED/FAILED/CANCELLED
#   $STUB_SLURM_STATE/jobs/<id>.pid      pid of the backgrounded job
#   $STUB_SLURM_STATE/jobs/<id>.argv     sbatch arguments of the job, NUL-separated
#   $STUB_SLURM_STATE/calls.log          one line per stub call: command and arguments (tab-separated)
# (STUB_SLURM_*, not SLURM_*: the jobstep executor drops SLURM_* variables before it calls srun)
STATE="${STUB_SLURM_STATE:-${TMPDIR:-/tmp}/slurm-stub-state}"
mkdir -p "$STATE/jobs"

log_call() {
    local IFS=$'\t'
    printf '%s\n' "$*" >> "$STATE/calls.log"
}

# job ids that carry the name given by --name <n> / --name=<n> (all jobs when no name is given)
jobs_named() {
    local name="" prev=""
    for arg in "$@"; do
        case "$arg" in
            --name=*) name="${arg#--name=}" ;;
        esac
        [ "$prev" = "--name" ] && name="$arg"
        prev="$arg"
    done
    for f in "$STATE"/jobs/*.state; do
        [ -e "$f" ] || continue
        local id
        id="$(basename "$f" .state)"
        if [ -z "$name" ] || [ "$(cat "$STATE/jobs/$id.name" 2>/dev/null)" = "$name" ]; then
            echo "$id"
        fi
    done | sort -n
}

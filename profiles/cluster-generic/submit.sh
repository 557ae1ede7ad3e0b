#!/usr/bin/env bash
# Submit one Snakemake jobscript to PBS/Torque (qsub) or LSF (bsub) and print only the job id.
#
#   profiles/cluster-generic/submit.sh <jobscript>
#
# The jobscript's "# properties = {...}" line holds the rule, threads and resources. They map to
#   pbs: qsub -N <rule> -l select=1:ncpus=<threads>:mem=<mem_mb>mb[:ngpus=<gpu>] -l walltime=HH:MM:00 [-q queue]
#   lsf: bsub -J <rule> -n <threads> -R "rusage[mem=<mem_mb>]" -W <runtime> [-gpu "num=<gpu>"] [-q queue]
# Environment: VECFLOW_SCHEDULER=pbs|lsf (default pbs), VECFLOW_QUEUE, VECFLOW_GPU_QUEUE (queues, optional),
# VECFLOW_SUBMIT_DRY_RUN=1 prints the command instead of running it (for tests and checking a setup).
set -euo pipefail

jobscript="${1:?usage: submit.sh <jobscript>}"
scheduler="${VECFLOW_SCHEDULER:-pbs}"

# rule, threads, mem_mb, runtime (minutes), gpu, one per line, from the jobscript's properties line
read_properties() {
    python3 - "$1" <<'PY'
import json, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
match = re.search(r"^# properties = (.*)$", text, re.MULTILINE)
if not match:
    sys.exit(f"{sys.argv[1]}: no '# properties = ' line (not a Snakemake jobscript)")
props = json.loads(match.group(1))
resources = props.get("resources", {})
rule = props.get("rule") or "snakejob"
if props.get("type") == "group":
    rule = f"group_{props.get('groupid', 'job')}"
print(rule)
print(int(props.get("threads") or 1))
print(int(resources.get("mem_mb") or 0))
print(int(resources.get("runtime") or 0))
print(int(resources.get("gpu") or 0))
PY
}

{ read -r rule; read -r threads; read -r mem_mb; read -r runtime; read -r gpu; } < <(read_properties "$jobscript")
queue="${VECFLOW_QUEUE:-}"
if [ "$gpu" -gt 0 ] && [ -n "${VECFLOW_GPU_QUEUE:-}" ]; then queue="$VECFLOW_GPU_QUEUE"; fi

case "$scheduler" in
    pbs)
        select="select=1:ncpus=$threads"
        [ "$mem_mb" -gt 0 ] && select="$select:mem=${mem_mb}mb"
        [ "$gpu" -gt 0 ] && select="$select:ngpus=$gpu"
        cmd=(qsub -N "$rule" -l "$select")
        [ "$runtime" -gt 0 ] && cmd+=(-l "walltime=$(printf '%02d:%02d:00' $((runtime / 60)) $((runtime % 60)))")
        [ -n "$queue" ] && cmd+=(-q "$queue")
        cmd+=(-j oe -o logs/cluster/)
        ;;
    lsf)
        cmd=(bsub -J "$rule" -n "$threads")
        [ "$mem_mb" -gt 0 ] && cmd+=(-R "rusage[mem=$mem_mb]")
        [ "$runtime" -gt 0 ] && cmd+=(-W "$runtime")
        [ "$gpu" -gt 0 ] && cmd+=(-gpu "num=$gpu")
        [ -n "$queue" ] && cmd+=(-q "$queue")
        cmd+=(-o "logs/cluster/$rule.%J.log")
        ;;
    *)
        echo "submit.sh: VECFLOW_SCHEDULER must be pbs or lsf, got '$scheduler'" >&2
        exit 2
        ;;
esac

if [ -n "${VECFLOW_SUBMIT_DRY_RUN:-}" ]; then
    printf '%q ' "${cmd[@]}" "$jobscript"
    echo
    exit 0
fi

mkdir -p logs/cluster
out=""
if [ "$scheduler" = lsf ]; then
    # bsub reads the script from stdin and answers "Job <123> is submitted to queue <normal>."
    out="$("${cmd[@]}" < "$jobscript")"
    id="$(sed -n 's/^Job <\([0-9]*\)>.*/\1/p' <<< "$out")"
else
    out="$("${cmd[@]}" "$jobscript")"   # qsub prints the job id, e.g. 123.server
    id="$out"
fi
if [ -z "$id" ]; then
    echo "submit.sh: could not read a job id from: $out" >&2
    exit 1
fi
echo "$id"

#!/usr/bin/python3
"""A stand-in for `sacct` on the CI's test cluster, which has no accounting database (slurmdbd): installed by
.ci/slurm_up.sh as /usr/local/bin/sacct. It answers the query submitit's job watcher makes,
`sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]`, from `scontrol show job` (which knows a
finished job for MinJobAge seconds); any other use is handed to the real sacct."""
import os
import subprocess
import sys

REAL = "/usr/bin/sacct"


def real():
    os.execv(REAL, [REAL] + sys.argv[1:])


def main():
    fields, ids, header = None, [], True
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "--format") and i + 1 < len(args):
            fields, i = args[i + 1].split(","), i + 1
        elif a.startswith("--format="):
            fields = a.split("=", 1)[1].split(",")
        elif a in ("-j", "--jobs") and i + 1 < len(args):
            ids, i = ids + args[i + 1].split(","), i + 1
        elif a.startswith("--jobs="):
            ids += a.split("=", 1)[1].split(",")
        elif a in ("-n", "--noheader"):
            header = False
        elif a not in ("-P", "--parsable2", "-X", "--allocations"):
            real()
        i += 1
    if not fields or not ids:
        real()
    rows = []
    for jid in ids:
        run = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True)
        if run.returncode != 0:
            if "Invalid job id" in run.stderr:
                continue  # unknown, or purged after MinJobAge: sacct would print nothing either
            sys.stderr.write(run.stderr)
            sys.exit(1)
        for line in run.stdout.splitlines():
            rec = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if not rec:
                continue
            task = rec.get("ArrayTaskId")
            if task:
                rec["JobID"] = f"{rec['ArrayJobId']}_{task}" if task.isdigit() else f"{rec['ArrayJobId']}_[{task}]"
            else:
                rec["JobID"] = rec["JobId"]
            rec["State"] = rec.get("JobState", "")
            rec["JobIDRaw"] = rec["JobId"]
            rows.append("|".join(rec.get(f, "") for f in fields))
    if header:
        print("|".join(fields))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()

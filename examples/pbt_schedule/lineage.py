"""Print the learning rate the best model of a finished search was trained with, round by round.

    python examples/pbt_schedule/lineage.py OUTPUT_DIR

Follows the `parent` column of OUTPUT_DIR/trials.json from the best trial back to round 0 and
shows, for each step of the lineage, the learning rate used, the accuracy reached and the optimal
learning rate at that accuracy (from train.py), so you can see the population discover a
warm-up-then-decay schedule that no single trial was ever given.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import optimal_log_lr  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    out = sys.argv[1]
    with open(os.path.join(out, "trials.json")) as handle:
        rows = {row["model_dir"]: row for row in json.load(handle)}
    ok = [row for row in rows.values() if row["status"] == "ok"]
    row = max(ok, key=lambda r: r["score"])
    chain = []
    while row is not None:
        chain.append(row)
        row = rows.get(row["parent"]) if row["parent"] else None
    print(f"{'model':<16} {'learning_rate':>13} {'accuracy':>9} {'optimal lr now':>15}")
    for row in reversed(chain):
        with open(os.path.join(out, row["model_dir"], "trial.json")) as handle:
            accuracy = json.load(handle)["state"]["accuracy"]
        print(f"{row['model_dir']:<16} {row['learning_rate']:>13.2e} {accuracy:>9.3f} {10 ** optimal_log_lr(accuracy):>15.2e}")


if __name__ == "__main__":
    main()

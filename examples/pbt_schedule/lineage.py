"""Print the learning rate the best model of a finished search was trained with, round by round.

    python examples/pbt_schedule/lineage.py OUTPUT_DIR

The schedule of the best lineage comes from `autofinetune summary` (`lineage_schedule`: each
model the best one grew from, oldest first, with its hyperparameters and score); this script
adds what only this toy knows: the accuracy each step reached and the optimal learning rate at
that accuracy (from train.py), so you can see the population discover a warm-up-then-decay
schedule that no single trial was ever given.
"""
import json
import os
import sys

from autofinetune.views import summarize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import optimal_log_lr  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    out = sys.argv[1]
    schedule = summarize(out)["lineage_schedule"] or []
    print(f"{'model':<16} {'learning_rate':>13} {'accuracy':>9} {'optimal lr now':>15}")
    for step in schedule:
        with open(os.path.join(out, step["model"], "trial.json")) as handle:
            accuracy = json.load(handle)["state"]["accuracy"]
        print(f"{step['model']:<16} {step['params']['learning_rate']:>13.2e} {accuracy:>9.3f} {10 ** optimal_log_lr(accuracy):>15.2e}")


if __name__ == "__main__":
    main()

"""A train.py whose "training" is one evaluation of COCO's bbob f8 (Rosenbrock), 2-D, instance 1.

The end-to-end row of benchmarks/strategies.py runs it through the real CLI, so the search
goes through everything a real search does (hparam.yaml, subprocesses, the result file,
trials.json) on the same problem as the in-process table. It follows the train.py contract:
the hyperparameters --x0 and --x1 are the point in bbob's domain [-5, 5]^2, the "model" is
saved to --saved_params_dir, and the score goes back through autofinetune.report_final_result.

The score is minus the regret, -(f(x) - fopt) <= 0 (scores must be at most 1), so the best
score of a search is exactly minus the best regret; the tuner minimises 1 - score = 1 + regret,
which ranks candidates as the in-process benchmark's loss f(x) does.

    python -m autofinetune benchmarks/bbob_train.py --param_file=hparam.yaml ...  # x0, x1 in [-5, 5]

`--fopt` lets the benchmark hand over the optimum it computed once; without it the script
computes it itself, the same way (f at bbob's xopt).
"""
import argparse
import json
import os
import tempfile

import autofinetune

FUNCTION, DIMENSION, INSTANCE = 8, 2, 1


def problem():  # type: ignore[no-untyped-def]
    import cocoex

    suite = cocoex.Suite("bbob", f"instances: {INSTANCE}", f"function_indices: {FUNCTION} dimensions: {DIMENSION}")
    return next(iter(suite))


def fopt(f) -> float:  # type: ignore[no-untyped-def]
    """f(xopt); cocoex only writes xopt to a file in the current directory, so use a throwaway one."""
    import numpy as np

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            f._best_parameter("print")
            xopt = np.atleast_1d(np.loadtxt("._bbob_problem_best_parameter.txt"))
        finally:
            os.chdir(here)
    return float(f(xopt))


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser()
    parser.add_argument("--x0", type=float, required=True)
    parser.add_argument("--x1", type=float, required=True)
    parser.add_argument("--saved_params_dir", default="bbob_model")
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--fopt", type=float, default=None, help="bbob's optimal value (computed when absent)")
    args = parser.parse_args()

    f = problem()
    best = args.fopt if args.fopt is not None else fopt(f)
    value = float(f(np.array([args.x0, args.x1], dtype=float)))
    regret = value - best
    score = -regret

    os.makedirs(args.saved_params_dir, exist_ok=True)
    with open(os.path.join(args.saved_params_dir, "model.json"), "w") as handle:
        json.dump({"x0": args.x0, "x1": args.x1, "f": value, "fopt": best, "regret": regret}, handle)
    print(f"f8 at ({args.x0!r}, {args.x1!r}) = {value!r}, regret {regret!r}")
    autofinetune.report_final_result(score)


if __name__ == "__main__":
    main()

"""The smallest train.py: a noisy function instead of a model, seconds long, no ML framework.

It follows the whole contract a real script follows (README, "The training script"): every tuned hyperparameter is an
argparse option of the same name, the "model" is saved to --saved_params_dir, and the score
(higher is better, at most 1) goes back through autofinetune.report_final_result.
"""
import argparse
import json
import math
import os
import random

import autofinetune


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--saved_params_dir", default="quickstart_model")
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.01)
    args = parser.parse_args()

    # A made-up validation score with its peak at learning_rate=0.003, batch_size=48, dropout=0.2.
    distance = (math.log10(args.learning_rate / 0.003)) ** 2 + ((args.batch_size - 48) / 40) ** 2 + ((args.dropout - 0.2) / 0.5) ** 2
    score = 1.0 - distance / 3 + random.gauss(0.0, args.noise)
    score = min(score, 1.0)

    os.makedirs(args.saved_params_dir, exist_ok=True)
    with open(os.path.join(args.saved_params_dir, "model.json"), "w") as handle:
        json.dump({"learning_rate": args.learning_rate, "batch_size": args.batch_size, "dropout": args.dropout, "score": score}, handle)
    print(f"validation score {score:.4f}")
    autofinetune.report_final_result(score)


if __name__ == "__main__":
    main()

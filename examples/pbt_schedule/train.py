"""A "schedule" toy for population-based training: the best learning rate moves as the model learns.

In the spirit of Ray Tune's `pbt_function` example, without any ML framework (stdlib only). The
"model" is two numbers, `accuracy` and `steps`, saved in --saved_params_dir. Each epoch runs
STEPS_PER_EPOCH steps at a constant learning rate; how much a step gains depends on how the
learning rate compares with the optimal one *at the current accuracy*:

    log10(optimal lr) rises from -3 (accuracy 0) to -1 (accuracy 0.5), then falls to -3.5
    (accuracy 1): warm up, train fast, then fine-tune.

    r = lr / optimal lr
    r <= 1      gain = G * r * (1 - accuracy)        too small: slow, proportionally
    1 < r <= 2  gain = G * (2 - r) * (1 - accuracy)  a little too large: still fine
    r > 2       loss = G/2 * min(r - 2, 4) * accuracy  far too large: training diverges

so a learning rate that is right at the start is ten to a hundred times too small by the
middle, and one that is right in the middle destroys a fresh model. A constant learning rate
stalls (about 0.4 after 120 steps, 0.48 after 300, whatever the constant), while one re-chosen
every epoch reaches about 0.9 in 120 steps. `weight_decay` only scales the gain mildly (best at
1e-4), so the space is 2-D and every strategy (HAZero too) applies.

Contract (README, "The training script"): `--learning_rate`, `--weight_decay`, `--saved_params_dir`, `--model_path`
(resume from a parent's saved dir), `--epochs` (default 3 from scratch, 1 when resuming),
`--seed`. The score is the validation accuracy, at most 1. Everything is deterministic given the
arguments and the loaded state: the noise comes from a hash of both, not from the clock.

Each run writes to its model dir:
  state.json  the model: {"accuracy": A, "steps": N}
  trial.json  the state, the steps and epochs of this run, `fingerprint` (sha256 of the bytes of
              the state.json it saved) and `loaded_fingerprint` (sha256 of the state.json it
              loaded from --model_path; null from scratch), so a test can check that a child
              really resumed its parent's weights.
"""
import argparse
import hashlib
import json
import math
import os
import random

import autofinetune

STEPS_PER_EPOCH = 10
GAIN = 0.025
SCRATCH_EPOCHS = 3
#: (accuracy, log10 of the optimal learning rate): piecewise linear between the knots.
OPTIMAL_LOG_LR = [(0.0, -3.0), (0.5, -1.0), (1.0, -3.5)]
STATE_FILE = "state.json"
TRIAL_FILE = "trial.json"


def optimal_log_lr(accuracy: float) -> float:
    for (a0, u0), (a1, u1) in zip(OPTIMAL_LOG_LR, OPTIMAL_LOG_LR[1:]):
        if accuracy <= a1:
            return u0 + (u1 - u0) * (accuracy - a0) / (a1 - a0)
    return OPTIMAL_LOG_LR[-1][1]


def train_step(accuracy: float, learning_rate: float, decay_factor: float, rng: random.Random) -> float:
    ratio = learning_rate / 10 ** optimal_log_lr(accuracy)
    noise = max(0.0, 1.0 + 0.1 * rng.gauss(0.0, 1.0))
    if ratio <= 1.0:
        accuracy += GAIN * ratio * decay_factor * (1.0 - accuracy) * noise
    elif ratio <= 2.0:
        accuracy += GAIN * (2.0 - ratio) * decay_factor * (1.0 - accuracy) * noise
    else:
        accuracy -= 0.5 * GAIN * min(ratio - 2.0, 4.0) * accuracy * noise
    return min(max(accuracy, 0.0), 1.0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(model_path):
    """(state, fingerprint of the bytes loaded); a fresh model when there is no --model_path."""
    if not model_path:
        return {"accuracy": 0.0, "steps": 0}, None
    with open(os.path.join(model_path, STATE_FILE), "rb") as handle:
        data = handle.read()
    return json.loads(data), sha256(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--saved_params_dir", default="pbt_schedule_model")
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--epochs", type=int, default=None, help=f"default {SCRATCH_EPOCHS} from scratch, 1 when resuming")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = args.epochs if args.epochs is not None else (1 if args.model_path else SCRATCH_EPOCHS)
    if not args.learning_rate > 0 or not args.weight_decay > 0:
        parser.error("--learning_rate and --weight_decay must be positive")

    state, loaded_fingerprint = load(args.model_path)
    key = json.dumps({"learning_rate": args.learning_rate, "weight_decay": args.weight_decay, "epochs": epochs,
                      "seed": args.seed, "loaded": loaded_fingerprint}, sort_keys=True)
    rng = random.Random(sha256(key.encode()))
    decay_factor = math.exp(-0.5 * ((math.log10(args.weight_decay) + 4.0) / 1.5) ** 2)

    accuracy = float(state["accuracy"])
    steps = STEPS_PER_EPOCH * epochs
    for epoch in range(epochs):
        for _ in range(STEPS_PER_EPOCH):
            accuracy = train_step(accuracy, args.learning_rate, decay_factor, rng)
        print(f"epoch {epoch + 1}/{epochs}: accuracy {accuracy:.4f} (optimal lr now {10 ** optimal_log_lr(accuracy):.2e})")
    state = {"accuracy": accuracy, "steps": int(state["steps"]) + steps}

    os.makedirs(args.saved_params_dir, exist_ok=True)
    data = json.dumps(state, sort_keys=True).encode()
    with open(os.path.join(args.saved_params_dir, STATE_FILE), "wb") as handle:
        handle.write(data)
    record = {"state": state, "steps_this_run": steps, "epochs": epochs, "fingerprint": sha256(data),
              "loaded_fingerprint": loaded_fingerprint, "model_path": args.model_path,
              "learning_rate": args.learning_rate, "weight_decay": args.weight_decay, "seed": args.seed}
    with open(os.path.join(args.saved_params_dir, TRIAL_FILE), "w") as handle:
        json.dump(record, handle, indent=1)

    score = min(1.0, accuracy + 0.002 * rng.gauss(0.0, 1.0))  # a noisy validation estimate
    print(f"validation accuracy {score:.4f} after {state['steps']} steps")
    autofinetune.report_final_result(score)


if __name__ == "__main__":
    main()

"""The toy problem of the PBT paper (Jaderberg et al. 2017, "Population Based Training of Neural
Networks", section 4.1), as a train.py: stdlib only, well under a second.

The "model" is θ = (θ0, θ1), saved in --saved_params_dir and restored from --model_path; a fresh
model starts at (0.9, 0.9). We want to maximise the true objective

    Q(θ) = 1.2 - (θ0² + θ1²)                  (best: θ = (0, 0), Q = 1.2)

but training only sees the surrogate, weighted by the hyperparameters h = (h0, h1) in [0, 1]:

    Q̂(θ | h) = 1.2 - (h0·θ0² + h1·θ1²)

Each epoch takes STEPS_PER_EPOCH gradient-ascent steps on Q̂ with step size --lr (0.02):
θj <- θj + lr · ∂Q̂/∂θj = θj · (1 - 2·lr·hj). A coordinate whose h is 0 never moves. The
reported score is Q(θ)/1.2, so it is at most 1 (and 1 only at the optimum).

Contract (README, "The training script"): `--h0`, `--h1`, `--saved_params_dir`, `--model_path`, `--epochs` (default 3
from scratch, 1 when resuming), `--lr`, `--seed`. Deterministic given the arguments and the
loaded θ (a small noise on the score comes from a hash of both).

Each run writes to its model dir:
  state.json  the model: {"theta": [θ0, θ1], "steps": N}
  trial.json  the state, the steps and epochs of this run, `fingerprint` (sha256 of the bytes of
              the state.json it saved) and `loaded_fingerprint` (sha256 of the state.json it
              loaded; null from scratch).
"""
import argparse
import hashlib
import json
import os
import random

import autofinetune

STEPS_PER_EPOCH = 5
SCRATCH_EPOCHS = 3
THETA0 = (0.9, 0.9)
STATE_FILE = "state.json"
TRIAL_FILE = "trial.json"


def true_objective(theta) -> float:
    return 1.2 - (theta[0] ** 2 + theta[1] ** 2)


def surrogate_step(theta, h, lr):
    """One gradient-ascent step on Q̂(θ|h) = 1.2 - (h0 θ0² + h1 θ1²)."""
    return [t + lr * (-2.0 * hj * t) for t, hj in zip(theta, h)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(model_path):
    if not model_path:
        return {"theta": list(THETA0), "steps": 0}, None
    with open(os.path.join(model_path, STATE_FILE), "rb") as handle:
        data = handle.read()
    return json.loads(data), sha256(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h0", type=float, default=0.5)
    parser.add_argument("--h1", type=float, default=0.5)
    parser.add_argument("--saved_params_dir", default="pbt_toy_model")
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--epochs", type=int, default=None, help=f"default {SCRATCH_EPOCHS} from scratch, 1 when resuming")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = args.epochs if args.epochs is not None else (1 if args.model_path else SCRATCH_EPOCHS)
    h = [min(max(args.h0, 0.0), 1.0), min(max(args.h1, 0.0), 1.0)]

    state, loaded_fingerprint = load(args.model_path)
    theta = [float(t) for t in state["theta"]]
    steps = STEPS_PER_EPOCH * epochs
    for epoch in range(epochs):
        for _ in range(STEPS_PER_EPOCH):
            theta = surrogate_step(theta, h, args.lr)
        print(f"epoch {epoch + 1}/{epochs}: theta ({theta[0]:.4f}, {theta[1]:.4f}), Q {true_objective(theta):.4f}")
    state = {"theta": theta, "steps": int(state["steps"]) + steps}

    os.makedirs(args.saved_params_dir, exist_ok=True)
    data = json.dumps(state, sort_keys=True).encode()
    with open(os.path.join(args.saved_params_dir, STATE_FILE), "wb") as handle:
        handle.write(data)
    record = {"state": state, "steps_this_run": steps, "epochs": epochs, "fingerprint": sha256(data),
              "loaded_fingerprint": loaded_fingerprint, "model_path": args.model_path,
              "h0": args.h0, "h1": args.h1, "lr": args.lr, "seed": args.seed}
    with open(os.path.join(args.saved_params_dir, TRIAL_FILE), "w") as handle:
        json.dump(record, handle, indent=1)

    key = json.dumps({"h": h, "epochs": epochs, "lr": args.lr, "seed": args.seed, "loaded": loaded_fingerprint}, sort_keys=True)
    noise = 0.001 * random.Random(sha256(key.encode())).gauss(0.0, 1.0)
    score = min(1.0, true_objective(theta) / 1.2 + noise)
    print(f"score Q/1.2 = {score:.4f} after {state['steps']} steps")
    autofinetune.report_final_result(score)


if __name__ == "__main__":
    main()

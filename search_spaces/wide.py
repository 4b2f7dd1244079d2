"""Wide space: depth, batch norm, optimiser and schedule, augmentation and input handling too.

Everything the seed space tunes, plus the training levers that matter on
FER2013. Conditional parameters: filters_N/dropout_N exist only for N <= blocks;
the learning-rate range depends on the optimiser.

Hyperparameters (google-research/tuning_playbook terms):
  scientific  blocks (depth 2-4), filters_N, dropout_N, dense, dense_dropout,
              batch_norm, augmentation (hflip, shift, rotation, erasing), normalize
              (scale or per-image standardize), label_smoothing: the questions the
              search answers.
  nuisance    optimizer (adam, adamw, sgd+nesterov), lr (log scale), weight_decay
              (log scale), schedule (none, cosine, plateau), batch_size: tuned so
              each scientific setting is judged at its own good optimisation settings.
  fixed       3x3 valid convs, one conv per block, sgd momentum 0.9, no class
              weighting; epochs = --max-epochs, early-stopping patience and seed
              from the seed config.
"""

# Filters per block around the seed's doubling (32, 64, 128, 256), from half to twice it:
# any width in any block made the widest trials several times slower per epoch for no gain.
FILTER_CHOICES = tuple(tuple(int(32 * 2**i * f) for f in (0.5, 0.75, 1, 1.5, 2)) for i in range(4))


def space(trial):
    blocks = trial.suggest_int("blocks", 2, 4)
    for i in range(1, blocks + 1):
        trial.suggest_categorical(f"filters_{i}", FILTER_CHOICES[i - 1])
        trial.suggest_float(f"dropout_{i}", 0.0, 0.5, step=0.05)
    trial.suggest_int("dense", 128, 1024, log=True)
    trial.suggest_float("dense_dropout", 0.0, 0.7, step=0.05)
    trial.suggest_categorical("batch_norm", (False, True))

    optimizer = trial.suggest_categorical("optimizer", ("adam", "adamw", "sgd"))
    # SGD wants a larger step than the Adam family: same parameter, optimiser-dependent range.
    low, high = (1e-3, 0.2) if optimizer == "sgd" else (1e-4, 1e-2)
    trial.suggest_float("lr", low, high, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_categorical("schedule", ("none", "cosine", "plateau"))
    trial.suggest_categorical("batch_size", (32, 64, 128))

    trial.suggest_categorical("hflip", (False, True))
    trial.suggest_int("shift", 0, 4)
    trial.suggest_float("rotation", 0.0, 15.0)
    trial.suggest_float("erasing", 0.0, 0.5)
    trial.suggest_categorical("normalize", ("scale", "standardize"))
    trial.suggest_float("label_smoothing", 0.0, 0.2)
    return None

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

Warm start (`points`, evaluated first, so a search never ends below them): known
recipes written in this space's parameters. Where a paper's value lies outside the
space, the nearest value inside it is used (noted per point).
  seed        the seed CNN itself (TrainConfig()); weight_decay 1e-6, the space's
              floor, stands for its 0.
  std         the seed with per-image standardisation (Tang 2013, the FER2013
              challenge winner, normalised every image): the best one-line change
              measured on both the default data and the hard preset (benchmarks/
              bench_search.py, 10 epochs), where batch norm on top of it was slower.
  bn-std      std plus batch norm (Ioffe & Szegedy 2015).
  sgd-cosine  the VGG-style FER2013 recipe of Khaireddin & Chen 2021 ("Facial
              Emotion Recognition: State of the Art Performance on FER2013"):
              4 blocks with batch norm, SGD with Nesterov momentum 0.9, lr 0.01,
              weight decay 1e-4, batch 64, cosine annealing (one of the schedules
              they compare), flips, shifts, rotation 10 and random erasing 0.5;
              widths at the seed's doubling (theirs: 64-512) and shift 4 (theirs:
              20%) to stay in the space and on CPU budgets.
  augment     bn-std with the FER2013 augmentation of Tang 2013 and Pramerdorfer &
              Kampel 2016 ("Facial Expression Recognition using CNNs: State of the
              Art"): horizontal flips and random crops (shift 4), Adam, cosine schedule.
"""

# Filters per block around the seed's doubling (32, 64, 128, 256), from half to twice it:
# any width in any block made the widest trials several times slower per epoch for no gain.
FILTER_CHOICES = tuple(tuple(int(32 * 2**i * f) for f in (0.5, 0.75, 1, 1.5, 2)) for i in range(4))

SEED_POINT = {
    "blocks": 3, "filters_1": 32, "filters_2": 64, "filters_3": 128,
    "dropout_1": 0.25, "dropout_2": 0.25, "dropout_3": 0.25, "dense": 512, "dense_dropout": 0.5,
    "batch_norm": False, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6, "schedule": "none",
    "batch_size": 64, "hflip": False, "shift": 0, "rotation": 0.0, "erasing": 0.0,
    "normalize": "scale", "label_smoothing": 0.0,
}
STD_POINT = {**SEED_POINT, "normalize": "standardize"}
BN_STD_POINT = {**STD_POINT, "batch_norm": True}
SGD_COSINE_POINT = {
    **BN_STD_POINT, "blocks": 4, "filters_4": 256, "dropout_4": 0.25,
    "optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4, "schedule": "cosine",
    "hflip": True, "shift": 4, "rotation": 10.0, "erasing": 0.5,
}
AUGMENT_POINT = {**BN_STD_POINT, "hflip": True, "shift": 4, "schedule": "cosine"}
points = [SEED_POINT, STD_POINT, BN_STD_POINT, SGD_COSINE_POINT, AUGMENT_POINT]


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

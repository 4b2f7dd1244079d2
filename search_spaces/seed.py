"""Seed space: filters and dropout per block, dense width and dropout around the seed CNN.

The product card's four knobs on the classic 3-block FER CNN; the seed
configuration itself (32/64/128 filters, dropout .25 per block, dense 512,
dropout .5) is evaluated first (`points`), so the search starts from the seed's score.

Hyperparameters (google-research/tuning_playbook terms):
  scientific  filters_1..3 (conv filters per block), dropout_1..3 (dropout after
              each block), dense (width of the hidden dense layer), dense_dropout.
  nuisance    none tuned: optimiser (Adam), lr 1e-3 and batch size 64 stay at the
              seed values, so the comparison is "the seed recipe, resized".
  fixed       blocks 3, 3x3 valid convs, one conv per block, no batch norm, no
              schedule, no augmentation, pixels scaled to [0, 1], no label smoothing;
              epochs = --max-epochs, early-stopping patience and seed from the seed config.
"""

# (low, high, step) per block: the seed's 32/64/128 sits in the middle of each range.
FILTER_RANGES = ((16, 64, 8), (32, 128, 16), (64, 256, 32))

SEED_POINT = {
    "filters_1": 32, "filters_2": 64, "filters_3": 128,
    "dropout_1": 0.25, "dropout_2": 0.25, "dropout_3": 0.25,
    "dense": 512, "dense_dropout": 0.5,
}
points = [SEED_POINT]


def space(trial):
    for i, (low, high, step) in enumerate(FILTER_RANGES, 1):
        trial.suggest_int(f"filters_{i}", low, high, step=step)
        trial.suggest_float(f"dropout_{i}", 0.0, 0.5, step=0.05)
    trial.suggest_int("dense", 128, 1024, log=True)
    trial.suggest_float("dense_dropout", 0.0, 0.7, step=0.05)
    return {"blocks": 3}

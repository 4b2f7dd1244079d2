"""The Tune callback that signs Ray's pickles (pickles.py) as Ray saves them, and the driver's last signing.

Ray writes its state into a driver staging folder under /tmp/ray (this user's, this process's)
and copies it into the results folder in a thread. After each step of Ray's loop, in which it
may have saved, the callback signs what changed in the staging folder: the bytes this process
wrote, never what someone else put into the results folder meanwhile. `sign_at_end` signs once
more after `Tuner.fit` returns (Ray waits for its last copy), Ctrl+C included.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from . import pickles

_ACTIVE: list[PickleSigner] = []  # the signer Ray runs in this process (restored from tuner.pkl on --resume)


class PickleSigner(Callback):
    """Pickled with the Tuner: holds nothing (never the key); the folders come from Ray's trials."""

    def __init__(self) -> None:
        self._exp_dir: Path | None = None
        self._staging: Path | None = None
        self._seen: dict[str, tuple[int, int]] = {}

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]

    def setup(self, *args: object, **info: object) -> None:
        _ACTIVE[:] = [self]

    def on_step_end(self, iteration: int, trials: list, **info: object) -> None:
        if not self._learn(trials):
            return
        assert self._staging is not None and self._exp_dir is not None
        now = _stamps(self._staging)
        if now != self._seen:  # Ray saved since the last step: a few stats per step otherwise
            pickles.sign(self._exp_dir, [self._staging])
            self._seen = now

    def on_experiment_end(self, trials: list, **info: object) -> None:
        """After Ray's last, awaited save (a resumed search whose trials had all ended runs no step)."""
        if self._learn(trials):
            assert self._exp_dir is not None
            self.sign_now(self._exp_dir)

    def _learn(self, trials: list) -> bool:
        """Where Ray stages and keeps this experiment's state, from its trials; False: not yet, or remote."""
        if self._staging is None and trials:
            storage = trials[0].storage
            if storage.storage_filesystem.type_name != "local":
                return False  # remote storage: not signed (and not checked) by fersearch
            self._exp_dir = Path(storage.experiment_fs_path)
            self._staging = Path(storage.experiment_driver_staging_path)
        return self._staging is not None

    def sign_now(self, exp_dir: Path) -> None:
        if self._staging is not None:
            pickles.sign(exp_dir, [self._staging])


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for rel in pickles.pickle_files(folder):
        try:
            st = (folder / rel).stat()
        except OSError:
            continue
        out[rel] = (st.st_mtime_ns, st.st_size)
    return out


TUNER_PKL = "tuner.pkl"  # written by Tuner() / Tuner.restore() straight into the results folder, not staged


def sign_tuner(exp_dir: Path) -> None:
    """Right after this process made (or restored) the Tuner, which wrote tuner.pkl."""
    pickles.sign(exp_dir, names=[TUNER_PKL])


def sign_at_end(exp_dir: Path) -> None:
    """After Tuner.fit returned or raised (Ray waits for its last copy): what this process wrote."""
    for signer in _ACTIVE:
        signer.sign_now(exp_dir)
    _ACTIVE.clear()
    sign_tuner(exp_dir)

"""The GPU path measured on whatever device this machine has; prints (and writes) one JSON of figures.

Parts (each a key of the JSON, written to --out after every part, so a run cut short keeps its figures):
  facts        GPU name, compute capability, memory, torch / CUDA / cuDNN versions, native bf16
               (capability >= 8.0, not torch's emulation-counting answer), what precision=auto picks
  gpu_tests    the gpu-marked tests (pytest -m gpu): passed / failed / skipped
  fit          fit's training images/s at batch 64 and 256: CUDA graphs on and off, fp32 and bf16, beside a
               plain eager PyTorch loop (fp32, channels-first, the batch copied from the host each step,
               loss.item() every step: the tutorial loop) on the same device and data; the capture's
               seconds (what re-capturing at each learning-rate change would cost per epoch); what
               precision=auto picked and whether it was the faster; validation graphed against eager
  trial_parts  each part of a trial's start and of an epoch's report timed alone at FER2013's size: data to
               the device (and found resident by a reused worker), model build, the ONNX latency measurement,
               the graph capture, the first epoch, a checkpoint, the per-image record
  determinism  two runs with deterministic=true, and two without: bit-identical weights or not
  packing      aggregate images/s of 1, 2, 4 and 8 trials (processes, graphed) training at once on one device,
               with each one's memory (torch's peak, and NVML's per-process figure with the CUDA context)
  headline     `fersearch tune --trials 50 --gpus 1` on 35,887 synthetic faces (FER2013's size) under a time
               limit (--headline-s): trials ended, epochs, summed training images/s, and where the wall time
               went (Ray start, trial setup, training, evaluation, per-epoch reporting, gaps between trials),
               all read from the search's history.csv and trials.csv; then `best --evaluate` timed
  tune         (not run by default) a 16-trial `tune --gpus 1 --gpus-per-trial 0.25` and `best --evaluate`

On a machine without CUDA every GPU part says so and is skipped, except with --cpu, which runs
each part on the CPU at a small size (to test the script itself; its figures mean nothing for GPUs).

    python benchmarks/bench_gpu.py [--quick] [--cpu] [--parts facts,fit,...] [--headline-s S] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("facts", "gpu_tests", "fit", "trial_parts", "packing", "headline", "determinism")
ALL_PARTS = (*PARTS, "tune")
LOG_DIR: Path | None = None  # --out's folder
NO_GPU = "skipped: no CUDA device visible to torch (run with --cpu to exercise this part on the CPU)"


def fake_fer(n_train: int, n_val: int, seed: int = 0):
    """FER-sized random faces: throughput does not depend on what the pixels show."""
    from fersearch.data import FerData

    rng = np.random.default_rng(seed)
    n = n_train + n_val
    split = np.r_[np.zeros(n_train, np.int8), np.ones(n_val, np.int8)]
    return FerData(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n).astype(np.int64), split,
                   source="bench_gpu")


def facts(device: torch.device) -> dict:
    from fersearch.train.device import bf16_capability, native_bf16, resolve_precision

    out: dict = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "device": str(device),
                 "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        cap = torch.cuda.get_device_capability(device)
        out.update(gpu=props.name, capability=f"{cap[0]}.{cap[1]}", memory_gib=round(props.total_memory / 2**30, 1),
                   gpus_visible=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version(),
                   bf16_native=bf16_capability(cap),
                   bf16_torch_including_emulation=torch.cuda.is_bf16_supported(including_emulation=True))
    out["auto_precision"] = resolve_precision("auto", device)
    out["bf16_native_here"] = native_bf16(device)
    return out


def gpu_tests() -> dict:
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfs",
                          "--tb=short", "tests"], cwd=ROOT, capture_output=True, text=True)
    if LOG_DIR is not None:  # the whole pytest output beside --out: failures need more than the summary line
        (LOG_DIR / "gpu_tests.txt").write_text(res.stdout + res.stderr)
    tail = res.stdout.strip().splitlines()[-1:] if res.stdout.strip() else res.stderr.strip().splitlines()[-1:]
    return {"rc": res.returncode, "summary": tail[0] if tail else "", "seconds": round(time.time() - t0, 1)}


def plain_loop(data, device: torch.device, batch: int, epochs: int) -> float:
    """The tutorial loop: fp32, channels-first, a host batch copied each step, loss.item() every step."""
    from fersearch.config import TrainConfig
    from fersearch.model import build_model

    torch.manual_seed(0)
    model = build_model(TrainConfig()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = data.subset("train")
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    rate = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, seen = time.perf_counter(), 0
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            xb = x[idx].to(device).float() / 255.0
            yb = y[idx].to(device)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            seen += len(idx)
        rate = seen / (time.perf_counter() - t0)  # the last epoch: after cuDNN's and the allocator's warm-up
    return rate


def fit_run(data, device: torch.device, batch: int, precision: str, graphs: str, epochs: int):
    from fersearch.config import TrainConfig
    from fersearch.train import fit

    cfg = TrainConfig(batch_size=batch, precision=precision, epochs=epochs, patience=0, cuda_graphs=graphs)
    return fit(cfg, data, device=device)


def eval_part(data, device: torch.device) -> dict:
    """Validation of FER2013's size (3,589 faces) at batch 512: eager, and graphed with and without its capture."""
    from fersearch.config import TrainConfig
    from fersearch.model import build_model
    from fersearch.train.graphs import graphed_eval
    from fersearch.train.predict import EVAL_BATCH, as_input, log_probs

    model = build_model(TrainConfig()).to(device, memory_format=torch.channels_last).eval()
    x = torch.from_numpy(data.images[:3_589]).unsqueeze(1).to(device)

    def timed(fn, repeat: int = 5) -> float:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / repeat * 1000

    out = {"images": int(x.shape[0]), "eager_ms": round(timed(lambda: log_probs(model, x, EVAL_BATCH)), 2)}
    if device.type == "cuda":
        t0 = time.perf_counter()
        graphed = graphed_eval(model, EVAL_BATCH, False, as_input)
        torch.cuda.synchronize(device)
        out["capture_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        if graphed is not None:
            out["graphed_ms"] = round(timed(lambda: graphed(x)), 2)
    return out


def fit_part(device: torch.device, quick: bool) -> dict:
    from fersearch.train.device import resolve_precision

    n_train = 2_000 if quick else 28_709  # FER2013's training split
    data, epochs = fake_fer(n_train, 3_589 if not quick else 600), 2
    rows = []
    modes = ("on", "off") if device.type == "cuda" else ("off",)
    for batch in (64, 256):
        plain = plain_loop(data, device, batch, epochs)
        row: dict = {"batch": batch, "plain_fp32": round(plain)}
        for graphs in modes:
            for precision in ("fp32", "bf16"):
                result = fit_run(data, device, batch, precision, graphs, epochs)
                rate = float(result.history[-1]["images_per_s"])  # the last epoch: after warm-up and capture
                key = f"graphs_{graphs}_{precision}"
                row[key] = round(rate)
                row[f"{key}_x_plain"] = round(rate / plain, 2)
                if result.cuda_graphs:
                    row[f"{key}_capture_s"] = round(result.capture_s, 3)
                    row[f"{key}_epoch_s"] = round(n_train / rate, 3)
        for graphs in modes:
            picked = resolve_precision("auto", device, graphs=graphs == "on")
            other = "fp32" if picked == "bf16" else "bf16"
            row[f"auto_graphs_{graphs}"] = picked
            row[f"auto_graphs_{graphs}_x_other"] = round(row[f"graphs_{graphs}_{picked}"]
                                                        / row[f"graphs_{graphs}_{other}"], 3)
        rows.append(row)
    return {"train_images": n_train, "epochs": epochs, "rows": rows, "validation": eval_part(data, device)}


def trial_parts(device: torch.device, quick: bool) -> dict:
    """The parts of a trial's start and of each epoch's report, each timed alone (ms) at FER2013's size."""
    import io

    from fersearch.config import TrainConfig
    from fersearch.deploy import measure
    from fersearch.model import build_model
    from fersearch.paired import encode
    from fersearch.train import fit
    from fersearch.train.recipe import split_tensors

    data = fake_fer(2_000 if quick else 28_709, 3_589)

    def ms(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return round((time.perf_counter() - t0) * 1000, 1)

    out = {"data_to_device_ms": ms(lambda: split_tensors(data, "train", device)),
           "data_resident_ms": ms(lambda: split_tensors(data, "train", device)),  # a reused worker's next trial
           "model_build_ms": ms(lambda: build_model(TrainConfig()).to(device, memory_format=torch.channels_last)),
           "onnx_latency_measure_ms": ms(lambda: measure(build_model(TrainConfig()).eval()))}
    states: list = []
    result = fit(TrainConfig(epochs=1, patience=0), data, device=device, on_epoch=lambda m, s: states.append(s))
    out["graph_capture_ms"] = round(result.capture_s * 1000, 1) if result.cuda_graphs else None
    out["first_epoch_s"] = round(float(result.history[0]["epoch_time_s"]), 3)
    out["checkpoint_ms"] = ms(lambda: torch.save(states[0](), io.BytesIO()))
    lp = torch.log_softmax(torch.randn(3_589, 7, device=device), 1)
    y = torch.randint(0, 7, (3_589,), device=device)
    out["per_image_record_ms"] = ms(lambda: encode((lp.argmax(1) == y).cpu().numpy(),
                                                   (-lp.gather(1, y[:, None])[:, 0]).cpu().numpy()))
    return out


def determinism(device: torch.device, quick: bool) -> dict:
    from fersearch.config import TrainConfig
    from fersearch.train import fit

    data = fake_fer(1_000 if quick else 4_000, 200)
    out = {}
    for deterministic in (True, False):
        cfg = TrainConfig(epochs=2, patience=0, hflip=True, shift=2, deterministic=deterministic)
        a, b = (fit(cfg, data, device=device).model.state_dict() for _ in range(2))
        out[f"deterministic_{str(deterministic).lower()}_identical"] = all(torch.equal(a[k], b[k]) for k in a)
    return out


def _nvml_process_mib(pid: int) -> float | None:
    try:
        import ray._private.thirdparty.pynvml as nvml

        nvml.nvmlInit()
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByIndex(i)):
                    if proc.pid == pid and proc.usedGpuMemory:
                        return round(proc.usedGpuMemory / 2**20)
        finally:
            nvml.nvmlShutdown()
    except Exception:  # NVML missing or restricted (containers): torch's figure stays
        return None
    return None


def packing_worker(device: str, n_train: int, epochs: int, barrier: str, k: int) -> None:
    """One 'trial' of the packing part (a process of its own, as a Ray trial is). After its warm-up it
    waits until all k have warmed up (a file each in `barrier`), so their timed epochs overlap."""
    from fersearch.config import TrainConfig
    from fersearch.train import fit

    torch.set_num_threads(1)
    dev = torch.device(device)
    data = fake_fer(n_train, 100)
    fit(TrainConfig(epochs=1, patience=0), data, device=dev)  # warm-up (CUDA context, cuDNN autotuning)
    Path(barrier, f"ready-{os.getpid()}").touch()
    deadline = time.time() + 300
    while len(list(Path(barrier).glob("ready-*"))) < k and time.time() < deadline:
        time.sleep(0.01)
    t0 = time.time()
    result = fit(TrainConfig(epochs=epochs, patience=0), data, device=dev)
    wall = time.time() - t0
    mem = {}
    if dev.type == "cuda":
        mem = {"torch_peak_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20),
               "torch_reserved_mib": round(torch.cuda.memory_reserved(dev) / 2**20),
               "nvml_process_mib": _nvml_process_mib(os.getpid())}
    print(json.dumps({"images": n_train * epochs, "wall_s": wall, "images_per_s": result.images_per_s, **mem}))


def packing(device: torch.device, quick: bool) -> dict:
    counts = (1, 2) if quick else (1, 2, 4, 8)
    n_train, epochs = (1_000, 2) if quick else (28_709, 3)
    rows = []
    for k in counts:
        with tempfile.TemporaryDirectory(prefix="bench_gpu-barrier-") as barrier:
            procs = [subprocess.Popen([sys.executable, __file__, "--packing-worker", str(device), str(n_train),
                                       str(epochs), barrier, str(k)], stdout=subprocess.PIPE, text=True)
                     for _ in range(k)]
            outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        wall = max(o["wall_s"] for o in outs)
        rows.append({"trials": k, "aggregate_images_per_s": round(sum(o["images"] for o in outs) / wall),
                     "per_trial_images_per_s": round(float(np.mean([o["images_per_s"] for o in outs]))),
                     **{key: max((o.get(key) or 0) for o in outs) for key in
                        ("torch_peak_mib", "torch_reserved_mib", "nvml_process_mib") if key in outs[0]}})
    base = rows[0]["aggregate_images_per_s"]
    for row in rows:
        row["x_one_trial"] = round(row["aggregate_images_per_s"] / base, 2)
    return {"train_images": n_train, "epochs": epochs, "rows": rows}


def _run_tune(work: Path, n: int, trials: int, epochs: int, gpu: list[str], limit_s: float | None,
              extra: list[str] = ()) -> tuple[dict, Path]:
    """Synthesises n faces, runs `fersearch tune` on them (Ctrl+C at limit_s, as a user would), and returns
    (figures, experiment folder)."""
    fer = [sys.executable, "-m", "fersearch"]
    data = work / "data"
    subprocess.run([*fer, "data", "synth", "--out", str(data), "--n", str(n)], check=True, capture_output=True)
    tune = [*fer, "tune", "--trials", str(trials), "--max-epochs", str(epochs), *gpu, "--data", str(data),
            "--name", "bench", "--results", str(work / "results"), "--quiet", *extra]
    t0 = time.time()
    proc = subprocess.Popen(tune, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    interrupted = False
    try:
        output, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        interrupted = True
        proc.send_signal(signal.SIGINT)  # fersearch saves what finished and exits 130
        try:
            output, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    out: dict = {"command": " ".join(["fersearch", *tune[3:]]), "rc": proc.returncode, "launched": t0,
                 "wall_s": round(time.time() - t0, 1), "interrupted_at_s": limit_s if interrupted else None}
    if proc.returncode not in (0, 130):
        out["error"] = output.strip().splitlines()[-5:]
    return out, work / "results" / "bench"


def _csv(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def time_budget(exp: Path, launched: float, n_train: int) -> dict:
    """What finished and where the wall time went, from the search's own history.csv and trials.csv."""
    import numpy as np

    history, trials = _csv(exp / "history.csv"), _csv(exp / "trials.csv")
    if history.empty:
        return {"budget_error": "no history.csv rows"}
    meta = json.loads((exp / "fersearch.json").read_text()) if (exp / "fersearch.json").is_file() else {}
    concurrency = _find(meta, "concurrency") or 1
    col = lambda name: history[name].astype(float).fillna(0.0) if name in history else np.zeros(len(history))  # noqa: E731
    if "time" in history:  # each trial's start: its first report's time, less that epoch and the setup before it
        first = history.sort_values("epoch").groupby("trial_id").first()
        starts = first["time"] - first["epoch_time_s"].fillna(0) - first.get("setup_s", 0 * first["time"]).fillna(0)
        start, end = float(starts.min()), float(history["time"].max())
    else:  # a search from before the timing columns: the launch to the end of the run
        start, end = launched, launched + float(col("epoch_time_s").sum()) / concurrency
    span = end - start
    train_s, eval_s, epoch_s = col("train_s").sum(), col("eval_s").sum(), col("epoch_time_s").sum()
    setup_s, report_s = col("setup_s").sum(), col("report_s").sum()
    slots = concurrency * span
    images = len(history) * n_train
    statuses = trials["status"].value_counts().to_dict() if "status" in trials else {}
    ended = sum(v for k, v in statuses.items() if k not in ("running", "pending"))
    return {
        "trials_ended": int(ended), "statuses": statuses, "epochs": int(len(history)),
        "training_images": int(images), "concurrency": concurrency,
        "summed_train_images_per_s": round(images / span) if span > 0 else None,
        "in_training_images_per_s": round(images / train_s) if train_s > 0 else None,
        "wall_split_s": {"ray_start_to_first_trial": round(start - launched, 1), "trials_span": round(span, 1)},
        "slot_s": {"total": round(slots, 1), "training": round(train_s, 1), "evaluation": round(eval_s, 1),
                   "rest_of_epoch": round(epoch_s - train_s - eval_s, 1), "reporting": round(report_s, 1),
                   "trial_setup": round(setup_s, 1),
                   "between_trials": round(slots - epoch_s - report_s - setup_s, 1)},
    }


def _find(obj, key: str):
    """The first value under `key` anywhere in a JSON tree (fersearch.json's layout may change)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def _evaluate(work: Path, timeout_s: float) -> dict:
    fer = [sys.executable, "-m", "fersearch"]
    t0 = time.time()
    try:
        best = subprocess.run([*fer, "best", "bench", "--evaluate", "--ties", "1", "--results", str(work / "results")],
                              cwd=work, capture_output=True, text=True, timeout=timeout_s)
        out: dict = {"evaluate_rc": best.returncode}
    except subprocess.TimeoutExpired:
        out = {"evaluate_rc": None, "evaluate_timeout_s": timeout_s}
    out["evaluate_wall_s"] = round(time.time() - t0, 1)
    metrics = work / "results" / "bench" / "best" / "metrics.json"
    if metrics.is_file():
        out["test_accuracy"] = json.loads(metrics.read_text())["accuracy"]
    return out


class GpuLoad:
    """`nvidia-smi dmon -s um -d 1` in the background: the GPU's busy % (sm) and memory bandwidth % (mem)."""

    def __enter__(self):
        self.lines: list[str] = []
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(["nvidia-smi", "dmon", "-s", "um", "-d", "1"],
                                                                  stdout=subprocess.PIPE, text=True)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.lines = self.proc.communicate(timeout=10)[0].splitlines()
        return False

    def summary(self) -> dict | None:
        rows = [line.split() for line in self.lines if line.strip() and not line.startswith("#")]
        sm = [float(r[1]) for r in rows if len(r) > 2 and r[1].replace(".", "").isdigit()]
        mem = [float(r[2]) for r in rows if len(r) > 2 and r[2].replace(".", "").isdigit()]
        if not sm:
            return None
        busy = sm[len(sm) // 10:]  # after Ray's start
        return {"seconds": len(sm), "sm_busy_pct_mean": round(sum(busy) / len(busy), 1),
                "mem_bw_pct_mean": round(sum(mem[len(mem) // 10:]) / max(1, len(mem) - len(mem) // 10), 1)}


def headline(device: torch.device, quick: bool, limit_s: float) -> dict:
    n, trials, epochs = (2_000, 8, 4) if quick else (35_887, 50, 30)
    gpu = ["--gpus", "1"] if device.type == "cuda" else ["--gpus", "0"]
    with tempfile.TemporaryDirectory(prefix="bench_gpu-headline-") as tmp:
        work = Path(tmp)
        with GpuLoad() as load:
            out, exp = _run_tune(work, n, trials, epochs, gpu, limit_s)
        out["gpu_load"] = load.summary()
        n_train = round(n * 28_709 / 35_887)  # synth splits as FER2013 does
        out.update(time_budget(exp, out.pop("launched"), n_train))
        if (exp / "trials.csv").is_file():
            out.update(_evaluate(work, 60 if quick else 75))
        return out


def tune_part(device: torch.device, quick: bool) -> dict:
    gpu = ["--gpus", "1", "--gpus-per-trial", "0.25"] if device.type == "cuda" else ["--gpus", "0"]
    n, trials, epochs = (1_000, 4, 2) if quick else (4_000, 16, 10)
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        work = Path(tmp)
        out, exp = _run_tune(work, n, trials, epochs, gpu, None)
        out.update(time_budget(exp, out.pop("launched"), round(n * 0.8)))
        out.update(_evaluate(work, 600))
        return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes, not ten)")
    ap.add_argument("--cpu", action="store_true", help="run every part on the CPU (tests this script)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"any of {','.join(ALL_PARTS)}")
    ap.add_argument("--headline-s", type=float, default=240.0, help="the headline search's time limit (Ctrl+C then)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    global LOG_DIR
    LOG_DIR = args.out.parent if args.out else None
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    runners = {"facts": lambda: facts(device), "gpu_tests": gpu_tests, "fit": lambda: fit_part(device, args.quick),
               "determinism": lambda: determinism(device, args.quick),
               "trial_parts": lambda: trial_parts(device, args.quick), "packing": lambda: packing(device, args.quick),
               "tune": lambda: tune_part(device, args.quick),
               "headline": lambda: headline(device, args.quick, args.headline_s)}
    result: dict = {"benchmark": "bench_gpu", "quick": args.quick, "device": str(device),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for part in args.parts.split(","):
        t0 = time.time()
        if part != "facts" and not cuda and not args.cpu:
            result[part] = NO_GPU
        else:
            try:
                result[part] = runners[part]()
            except Exception as e:  # one broken part must not cost the figures of the others
                result[part] = {"error": f"{type(e).__name__}: {e}"}
        if isinstance(result[part], dict):
            result[part]["part_s"] = round(time.time() - t0, 1)
        print(json.dumps({part: result[part]}), file=sys.stderr, flush=True)
        if args.out:  # after every part: a run cut short by its time limit keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--packing-worker":
        packing_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    else:
        main()

"""The GPU path measured on whatever device this machine has; prints (and writes) one JSON of figures.

Parts (each a key of the JSON):
  facts        GPU name, compute capability, memory, torch / CUDA / cuDNN versions, native bf16
               (capability >= 8.0, not torch's emulation-counting answer), what precision=auto picks
  gpu_tests    the gpu-marked tests (pytest -m gpu): passed / failed / skipped
  fit          fit's training images/s at batch 64 and 256, bf16 and fp32, beside a plain eager
               PyTorch loop (fp32, channels-first, the batch copied from the host each step, loss.item()
               every step: the tutorial loop) on the same device and data
  determinism  two runs with deterministic=true, and two without: bit-identical weights or not
  packing      aggregate images/s of 1, 2, 4 and 8 trials (processes) training at once on one device,
               with each one's memory (torch's peak, and NVML's per-process figure with the CUDA context)
  tune         a 16-trial `fersearch tune --gpus 1 --gpus-per-trial 0.25` and `best --evaluate`: wall times,
               the plan Ray got, trials.csv's devices

On a machine without CUDA every GPU part says so and is skipped, except with --cpu, which runs
each part on the CPU at a small size (to test the script itself; its figures mean nothing for GPUs).

    python benchmarks/bench_gpu.py [--quick] [--cpu] [--parts facts,fit,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("facts", "gpu_tests", "fit", "determinism", "packing", "tune")
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
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                         cwd=ROOT, capture_output=True, text=True)
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


def fit_rate(data, device: torch.device, batch: int, precision: str, epochs: int) -> float:
    from fersearch.config import TrainConfig
    from fersearch.train import fit

    cfg = TrainConfig(batch_size=batch, precision=precision, epochs=epochs, patience=0)
    return float(fit(cfg, data, device=device).history[-1]["images_per_s"])


def fit_part(device: torch.device, quick: bool) -> dict:
    n_train = 2_000 if quick else 28_709  # FER2013's training split
    data, epochs = fake_fer(n_train, 200), 2
    rows = []
    for batch in (64, 256):
        plain = plain_loop(data, device, batch, epochs)
        row = {"batch": batch, "plain_fp32": round(plain)}
        for precision in ("fp32", "bf16"):
            rate = fit_rate(data, device, batch, precision, epochs)
            row[f"fit_{precision}"] = round(rate)
            row[f"fit_{precision}_x_plain"] = round(rate / plain, 2)
        rows.append(row)
    return {"train_images": n_train, "epochs": epochs, "rows": rows}


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


def tune_part(device: torch.device, quick: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        work = Path(tmp)
        fer = [sys.executable, "-m", "fersearch"]
        data = work / "data"
        subprocess.run([*fer, "data", "synth", "--out", str(data), "--n", "1000" if quick else "4000"], check=True,
                       capture_output=True)
        gpu = ["--gpus", "1", "--gpus-per-trial", "0.25"] if device.type == "cuda" else ["--gpus", "0"]
        trials, epochs = ("4", "2") if quick else ("16", "10")
        tune = [*fer, "tune", "--trials", trials, "--max-epochs", epochs, *gpu, "--data", str(data), "--name", "bench",
                "--results", str(work / "results"), "--quiet"]
        t0 = time.time()
        res = subprocess.run(tune, cwd=work, capture_output=True, text=True)
        tune_s = time.time() - t0
        out: dict = {"command": " ".join(["fersearch", *tune[3:]]), "rc": res.returncode,
                     "tune_wall_s": round(tune_s, 1)}
        if res.returncode != 0:
            return {**out, "error": (res.stderr or res.stdout).strip().splitlines()[-3:]}
        from fersearch.search import experiment as ex
        from fersearch.search.checkpoints import folder_bytes

        exp = work / "results" / "bench"
        trials_df, meta = ex.read_trials(exp), ex.read_meta(exp)
        out.update(resources=meta["resources"], statuses=trials_df["status"].value_counts().to_dict(),
                   devices=trials_df.get("device", trials_df["gpu_ids"]).value_counts().to_dict(),
                   best_val_acc=float(trials_df["best_val_acc"].max()), folder_bytes=folder_bytes(exp))
        t0 = time.time()
        best = subprocess.run([*fer, "best", "bench", "--evaluate", "--results", str(work / "results")], cwd=work,
                              capture_output=True, text=True)
        out.update(evaluate_rc=best.returncode, evaluate_wall_s=round(time.time() - t0, 1))
        metrics = exp / "best" / "metrics.json"
        if metrics.is_file():
            out["test_accuracy"] = json.loads(metrics.read_text())["accuracy"]
        elif best.returncode:
            out["evaluate_error"] = (best.stderr or best.stdout).strip().splitlines()[-3:]
        return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes, not ten)")
    ap.add_argument("--cpu", action="store_true", help="run every part on the CPU (tests this script)")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    runners = {"facts": lambda: facts(device), "gpu_tests": gpu_tests, "fit": lambda: fit_part(device, args.quick),
               "determinism": lambda: determinism(device, args.quick), "packing": lambda: packing(device, args.quick),
               "tune": lambda: tune_part(device, args.quick)}
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

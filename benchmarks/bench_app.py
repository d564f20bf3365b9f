"""Times the Gradio app as its users meet it: start-up, then `/generate` over HTTP.

    python benchmarks/bench_app.py                                  # a table
    python benchmarks/bench_app.py --model DIR --requests 30 --burst 20 --json

Start-up: from launching `python app.py` as a subprocess until its page answers HTTP 200
(imports, model loading, server start), `--startups` times, each a fresh process.
Latency, on the last of those processes, through `gradio_client` as an API user calls it:
`--requests` sequential `/generate` calls after one warm-up call (median and p90 of the
round trip: queue, pipeline, GLB + OBJ export, file download), then a burst of `--burst`
concurrent clients (one thread and one `Client` each): the wall time until all are done and
each request's own latency (median, p90, max). The app serves one pipeline call at a time
(its default `--concurrency 1`), so a burst measures queueing.

The model is `--model`, else pretrained/atom-shapes64 if it exists, else a tiny random
pipeline saved to a temporary folder (the output says which: its timings are the app's
overhead more than the model's). The app inherits this process's environment: set
OMP_NUM_THREADS etc. before running, as for the app itself.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gradio_client import Client

from atom.data import SHAPES64

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
DEFAULT_MODEL = ROOT / "pretrained" / "atom-shapes64"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(model: str, tmp: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    """Starts `python app.py` on a free port; returns (process, url, seconds until it answered HTTP 200)."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", TMPDIR=str(tmp))
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(APP), "--model", model, "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < START_TIMEOUT_S:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"app.py did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def request(url: str, prompt: str, resolution: int | None, downloads: Path, client: Client | None = None) -> float:
    """Seconds for one `/generate` round trip (with a new client unless one is given, not counting its creation)."""
    own = client is None
    if own:
        client = Client(url, download_files=str(downloads), verbose=False, analytics_enabled=False)
    args = (prompt,) if resolution is None else (prompt, resolution)
    try:
        start = time.perf_counter()
        client.predict(*args, api_name="/generate")
        return time.perf_counter() - start
    finally:
        if own:
            client.close()


def sequential(url: str, prompts: list[str], resolution: int | None, downloads: Path) -> list[float]:
    client = Client(url, download_files=str(downloads), verbose=False, analytics_enabled=False)
    try:
        request(url, prompts[0], resolution, downloads, client)  # warm-up
        return [request(url, prompt, resolution, downloads, client) for prompt in prompts]
    finally:
        client.close()


def burst(url: str, prompts: list[str], resolution: int | None, downloads: Path) -> tuple[float, list[float]]:
    """(wall seconds until all are done, per-request seconds) of one concurrent client per prompt."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        latencies = list(pool.map(lambda prompt: request(url, prompt, resolution, downloads), prompts))
    return time.perf_counter() - start, latencies


def summary(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"n": len(ms), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "max_ms": float(ms.max())}


def tiny_model(folder: Path) -> str:
    from atom.pipeline import AToMPipeline

    AToMPipeline.from_components("tiny").save_pretrained(folder, include_text_encoder=False)
    return str(folder)


def run(args: argparse.Namespace, tmp: Path) -> dict:
    model, model_note = args.model, "as given"
    if model is None and DEFAULT_MODEL.is_dir():
        model, model_note = str(DEFAULT_MODEL), "the shipped model"
    elif model is None:
        model, model_note = tiny_model(tmp / "tiny_model"), "tiny random pipeline (no trained model found)"
    prompts = [record.prompt for record in SHAPES64]
    startups = []
    for i in range(args.startups):
        process, url, seconds = launch(model, tmp, tmp / "app.log")
        startups.append(seconds)
        if i < args.startups - 1:
            stop(process)
    try:
        latencies = sequential(url, [prompts[i % 64] for i in range(args.requests)], args.resolution, tmp / "dl")
        wall, burst_latencies = burst(url, [prompts[i % 64] for i in range(args.burst)], args.resolution, tmp / "dl")
    finally:
        stop(process)
    return {
        "model": model,
        "model_note": model_note,
        "resolution": args.resolution,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "startup_s": {"runs": startups, "median": float(np.median(startups))},
        "sequential": summary(latencies),
        "burst": {**summary(burst_latencies), "wall_s": wall, "requests_per_s": len(burst_latencies) / wall},
    }


def table(result: dict) -> str:
    seq, bur = result["sequential"], result["burst"]
    startups = ", ".join(f"{s:.1f}" for s in result["startup_s"]["runs"])
    resolution = result["resolution"] or "model default"
    sequential_label = f"/generate, {seq['n']} sequential (ms)"
    burst_label = f"/generate, burst of {bur['n']} (ms)"
    return "\n".join([
        f"model: {result['model']} ({result['model_note']}), marching resolution: {resolution}",
        f"{'measure':<34}{'median':>10}{'p90':>10}{'max':>10}",
        f"{'start-up, launch to HTTP 200 (s)':<34}{result['startup_s']['median']:>10.1f}{'':>20}  runs: {startups}",
        f"{sequential_label:<34}{seq['median_ms']:>10.0f}{seq['p90_ms']:>10.0f}{seq['max_ms']:>10.0f}",
        (f"{burst_label:<34}{bur['median_ms']:>10.0f}{bur['p90_ms']:>10.0f}{bur['max_ms']:>10.0f}"
         f"  all done in {bur['wall_s']:.1f} s, {bur['requests_per_s']:.1f} requests/s"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: see above)")
    parser.add_argument("--startups", type=int, default=1, help="app launches to time (default: 1)")
    parser.add_argument("--requests", type=int, default=20, help="sequential /generate calls (default: 20)")
    parser.add_argument("--burst", type=int, default=20, help="concurrent clients (default: 20)")
    parser.add_argument("--resolution", type=int, default=None, help="marching resolution (default: the model's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    for name in ("startups", "requests", "burst"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        # gradio_client leaves an empty folder in the temp folder for each file it downloads.
        tempfile.tempdir = tmp
        try:
            result = run(args, Path(tmp))
        finally:
            tempfile.tempdir = None
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()

"""Throughput and latency of ``fcnseg serve`` with batching on and off, and a bounded load test with bad uploads.

Run as ``.venv/bin/python benchmarks/serve_load.py [--checkpoint CKPT] [--images DIR] [--requests N]``.

For each mode (batching on: ``--max-batch-size 8 --max-wait-ms 10``, the defaults; off: ``--max-batch-size 1``) the
script starts the real command, ``python -m fcnseg serve``, on a free loopback port (both servers side by side,
measured in turn at each level, so that a change in the machine's load does not favour one mode), waits for
``/health``, warms it up, and sends ``POST /predict`` requests (raw PNG bodies of the images, one persistent
connection per client) from 1, 4 and 16 concurrent client threads, ``--requests`` requests in all per level; it
reports images per second and the p50 and p99 latency. Then, on a fresh server with batching on, the load test:
``--load-rounds`` rounds of 16 clients x 50 requests, every 5th request bad (not an image, truncated, a
decompression bomb's header, empty, a wrong content type, a body over ``--max-body-mb``). It reports the requests
sent, the good ones answered with the right mask (the mask the server gives the image alone, allowing 0.1 % of
pixels to differ by the rounding of a batched forward pass), the bad ones refused with a 4xx and one line of JSON,
everything else as errors, whether the server process is the same at the end, and its resident memory (``VmRSS``
after warm-up and after each round, idle; the peak ``VmHWM``).

Without ``--checkpoint`` the model is FCN-8s SqueezeNet 1.1 with seeded random weights and CamVid's 11 classes (the
speed of a trained one); ``--images`` defaults to CamVid's test images (480x360) in ``../shared``. The clients run
on the same machine as the server: on a small machine they take part of its CPU, as a co-located proxy would. The
processor (``lscpu``) is printed with the figures.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CAMVID_TEST = REPO.parent / "shared" / "data" / "camvid" / "test"
BATCHING = {"on": ["--max-batch-size", "8", "--max-wait-ms", "10"], "off": ["--max-batch-size", "1"]}
MAX_BODY_MB = 4


def processor() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown processor"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} logical CPUs"


def random_checkpoint(path: Path) -> None:
    """FCN-8s SqueezeNet 1.1, seeded random weights, CamVid's classes, saved as ``fcnseg train`` saves."""
    import torch

    from fcnseg import create_model
    from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
    from fcnseg.data.classes import CAMVID_CLASSES
    from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    model = create_model("fcn8s_squeezenet1_1", num_classes=len(CAMVID_CLASSES.names)).eval()
    classes = {"names": list(CAMVID_CLASSES.names), "colors": [list(c) for c in CAMVID_CLASSES.colors]}
    save_checkpoint(make_checkpoint(model, classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD), path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m fcnseg serve`` in a child process, its log in a temporary file."""

    def __init__(self, checkpoint: Path, flags: list[str], log: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "fcnseg", "serve", str(checkpoint), "--port", str(self.port)]
        command += ["--no-access-log", "--max-body-mb", str(MAX_BODY_MB), *flags]
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return request(self.connect(), "GET", "/health")[0] == 200
        except OSError:
            return False

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def memory_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} for process {self.process.pid}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, kind: str = "image/png"
) -> tuple[int, bytes]:
    headers = {"Content-Type": kind} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def run_clients(
    server: Server, clients: int, per_client: int, job: Callable[[http.client.HTTPConnection, int, int], None]
) -> float:
    """Run ``job(connection, client, i)`` ``per_client`` times in each of ``clients`` threads; the wall time."""
    barrier = threading.Barrier(clients + 1)

    def client(index: int, conn: http.client.HTTPConnection) -> None:
        barrier.wait()
        for i in range(per_client):
            job(conn, index, i)
        conn.close()

    threads = [threading.Thread(target=client, args=(c, server.connect())) for c in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def throughput(server: Server, bodies: list[bytes], clients: int, total: int) -> dict[str, float]:
    per_client = max(1, total // clients)
    latencies: list[float] = []
    lock = threading.Lock()

    def job(conn: http.client.HTTPConnection, client: int, i: int) -> None:
        body = bodies[(client * per_client + i) % len(bodies)]
        start = time.perf_counter()
        status, _ = request(conn, "POST", "/predict", body)
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"status {status}")
        with lock:
            latencies.append(elapsed)

    wall = run_clients(server, clients, per_client, job)
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(ordered),
        "images_per_s": len(ordered) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels, with almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bad_requests(good: bytes) -> list[tuple[bytes, str]]:
    return [
        (b"this is not an image", "image/png"),
        (good[: len(good) // 2], "image/png"),
        (png_claiming(20_000, 20_000), "image/png"),
        (b"", "image/png"),
        (good, "application/x-www-form-urlencoded"),
        (b"\0" * (MAX_BODY_MB * 2**20 + 1), "image/png"),
    ]


def mask_of(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as mask:
        return np.asarray(mask)


def load_test(
    server: Server, bodies: list[bytes], clients: int = 16, per_client: int = 50, rounds: int = 2
) -> dict[str, object]:
    """``rounds`` rounds of ``clients`` x ``per_client`` requests, every 5th bad; good answers are checked against the
    server's answer for the image alone. The resident memory is read after the warm-up and after each round (idle)."""
    conn = server.connect()
    reference = [mask_of(request(conn, "POST", "/predict", body)[1]) for body in bodies]
    conn.close()
    bad = bad_requests(bodies[0])
    counts = {"requests": 0, "good answered right": 0, "bad refused (4xx, JSON)": 0, "errors": 0}
    worst = [0.0]
    lock = threading.Lock()
    memory = {"RSS after warm-up (MiB)": round(server.memory_kib("VmRSS") / 1024)}

    def job(conn: http.client.HTTPConnection, client: int, i: int) -> None:
        n = client * per_client + i
        is_bad = n % 5 == 4
        body, kind = bad[n % len(bad)] if is_bad else (bodies[n % len(bodies)], "image/png")
        try:
            status, answer = request(conn, "POST", "/predict", body, kind)
        except (OSError, http.client.HTTPException):
            status, answer = 0, b""
            conn.close()  # reconnects at the next request
        outcome = "errors"
        if is_bad and 400 <= status < 500 and list(json.loads(answer)) == ["error"]:
            outcome = "bad refused (4xx, JSON)"
        elif not is_bad and status == 200:
            differ = float((mask_of(answer) != reference[n % len(bodies)]).mean())
            with lock:
                worst[0] = max(worst[0], differ)
            outcome = "good answered right" if differ <= 1e-3 else "errors"
        with lock:
            counts["requests"] += 1
            counts[outcome] += 1

    walls = []
    for round_ in range(1, rounds + 1):
        walls.append(round(run_clients(server, clients, per_client, job), 1))
        time.sleep(2)  # idle: what the server holds once the load is gone
        memory[f"RSS after round {round_} (MiB)"] = round(server.memory_kib("VmRSS") / 1024)
    return counts | {
        "wall s per round": walls,
        "largest share of pixels differing from the image alone": worst[0],
        "same server process at the end": server.process.poll() is None,
        **memory,
        "peak RSS (MiB)": round(server.memory_kib("VmHWM") / 1024),
    }


def print_table(rows: list[dict]) -> None:
    print("\n| batching | clients | images/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['batching']} | {row['clients']} | {row['images_per_s']:.1f} | {row['p50_ms']:.0f} | "
              f"{row['p99_ms']:.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="model to serve (default: a random FCN-8s SqueezeNet)")
    parser.add_argument("--images", type=Path, default=CAMVID_TEST, help="folder of PNG/JPEG images (default CamVid)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level (default 96)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--load-requests", type=int, default=50, help="requests per client in the load test")
    parser.add_argument("--load-rounds", type=int, default=2, help="rounds of the load test (default 2)")
    parser.add_argument("--load-only", action="store_true", help="skip the throughput table")
    parser.add_argument("serve_flags", nargs="*", help="more `fcnseg serve` flags, after --, e.g. -- --backend torch")
    args = parser.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:16]
    if not files:
        sys.exit(f"no images in {args.images}; pass --images DIR")
    bodies = [f.read_bytes() for f in files]
    print(f"processor: {processor()}; load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        checkpoint = args.checkpoint or Path(folder) / "random.pt"
        if args.checkpoint is None:
            random_checkpoint(checkpoint)
        os.environ.setdefault("FCNSEG_CACHE", str(Path(folder) / "cache"))
        if not args.load_only:
            # Both servers run side by side (an idle one costs no CPU) and are measured in turn at each level, so
            # that a change in the machine's load between measurements does not favour one mode.
            servers = {mode: Server(checkpoint, [*flags, *args.serve_flags], Path(folder) / f"{mode}.log")
                       for mode, flags in BATCHING.items()}  # fmt: skip
            rows = []
            for clients in args.clients:
                for mode, server in servers.items():
                    throughput(server, bodies, 2, 8)  # warm: the first requests of this size, and the caches
                    rows.append({"batching": mode} | throughput(server, bodies, clients, args.requests))
                    print(json.dumps(rows[-1]), flush=True)
            backend = next(line for line in servers["on"].log.read_text().splitlines() if line.startswith("backend"))
            for server in servers.values():
                server.stop()
            width, height = Image.open(files[0]).size
            print(f"\n{backend}; {len(files)} images of {width}x{height}")
            print_table(sorted(rows, key=lambda row: row["batching"] == "off"))
        server = Server(checkpoint, [*BATCHING["on"], *args.serve_flags], Path(folder) / "load.log")
        throughput(server, bodies, 2, 8)
        result = load_test(server, bodies, per_client=args.load_requests, rounds=args.load_rounds)
        server.stop()
        rounds = f"{args.load_rounds} x 16 clients x {args.load_requests} requests"
        print(f"\nload test: {rounds}, every 5th bad, batching on")
        for name, value in result.items():
            print(f"- {name}: {value}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other processes on the cores slow every figure)")


if __name__ == "__main__":
    main()

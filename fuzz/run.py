"""Run the atheris fuzz targets.

    python -m fuzz.run --list
    python -m fuzz.run sdp -max_total_time=60         # one target; libFuzzer flags after it
    python -m fuzz.run --all --seconds 60             # each target in its own process
    python -m fuzz.run sdp artifacts/fuzz/crashes/sdp-crash-…   # replay one input

Each target keeps a corpus under ``<artifacts>/corpus/<target>`` (seeded from
fuzz/seeds.py, grown by libFuzzer) and writes crashing inputs to
``<artifacts>/crashes/<target>-crash-<sha1>``; ``--artifacts`` defaults to
``artifacts/fuzz``. Known bugs (fuzz/known.py) are reported once and passed over
unless ``--strict``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

INSTRUMENTED = ["fuzz", "signaling", "conference", "sfu", "jwt", "aiortc.sdp", "aiortc.rtp",
                "aiortc.codecs.vpx", "aiortc.rtcrtpsender", "aiortc.rtcdtlstransport",
                "aioice.candidate"]
"""Packages whose branches guide the fuzzer: ours and the parsers they rely on."""
TARGET_NAMES = ("message", "sdp", "jwt", "vp8", "vp8_frames", "rtcp", "candidate",
                "send_loop")
_STATS = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+ "
                    r"(?:lim: \d+ )?exec/s: (\d+)")
_KNOWN = re.compile(r"known bug (\S+)")


def seed_corpus(artifacts: Path, target: str) -> Path:
    from fuzz.seeds import corpus

    directory = artifacts / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    for data in corpus()[target]:
        (directory / f"seed-{hashlib.sha1(data).hexdigest()[:12]}").write_bytes(data)
    return directory


def write_dictionary(artifacts: Path, target: str) -> Path | None:
    from fuzz.seeds import DICTIONARIES

    if target not in DICTIONARIES:
        return None
    path = artifacts / f"{target}.dict"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n'
                            for token in DICTIONARIES[target]))
    return path


def message_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half of the time libFuzzer's own byte mutation; else a JSON-aware one (fuzz/mutate.py)
    that reaches values the coverage of ``parse_message`` alone does not lead to."""
    import atheris

    from fuzz.mutate import Mutator

    rng = random.Random(seed)
    if rng.random() < 0.5:
        return bytes(atheris.Mutate(data, max_size))
    mutator = Mutator(rng, max_depth=1100)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        value = None
    try:
        text = mutator.text(mutator.mutate(value) if isinstance(value, dict) else
                            mutator.odd_value())
    except RecursionError:  # the input nests deeper than json.dumps can write
        return bytes(atheris.Mutate(data, max_size))
    if rng.random() < 0.2:
        text = mutator.mangle(text)
    return text.encode("utf-8", "surrogatepass")[:max_size]


def tolerating_known(name: str, target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``target``, except that a known bug (fuzz/known.py) is reported once and passed
    over, so that fuzzing goes on to find new ones."""
    from fuzz.known import known_exception

    seen: set[str] = set()

    def run(data: bytes) -> None:
        try:
            target(data)
        except Exception as exc:
            bug = known_exception(exc)
            if bug is None:
                raise
            if bug.name not in seen:
                seen.add(bug.name)
                print(f"{name}: known bug {bug.name} ({bug.where}; {bug.test}) on "
                      f"{data[:200]!r}", file=sys.stderr, flush=True)

    return run


def fuzz_one(target: str, libfuzzer_args: list[str], *, artifacts: Path, strict: bool) -> None:
    """Fuzz ``target`` in this process (libFuzzer exits the process when done)."""
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        from fuzz.targets import TARGETS
    one = TARGETS[target] if strict else tolerating_known(target, TARGETS[target])
    crashes = artifacts / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-artifact_prefix={crashes}/{target}-", "-timeout=10",
            "-rss_limit_mb=2048", *libfuzzer_args]
    dictionary = write_dictionary(artifacts, target)
    if dictionary is not None:
        args.append(f"-dict={dictionary}")
    if not any(not a.startswith("-") for a in libfuzzer_args):
        args.append(str(seed_corpus(artifacts, target)))
    if target == "message":
        atheris.Setup([*args, "-max_len=16384"], one, custom_mutator=message_mutator)
    else:
        atheris.Setup(args, one)
    atheris.Fuzz()


def fuzz_all(targets: tuple[str, ...], limit: list[str], options: list[str]) -> int:
    """Each target in its own process, ``limit`` (libFuzzer flags) long; one summary line
    per target. Returns the exit status: 1 when a target found a new bug."""
    failed = []
    for target in targets:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "fuzz.run", target, *options, *limit],
                              capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        stats = _STATS.search(proc.stderr)
        summary = (f"runs {stats[1]} cov {stats[2]} ft {stats[3]} corpus {stats[4]} "
                   f"exec/s {stats[5]}" if stats else "no stats")
        known = sorted(set(_KNOWN.findall(proc.stderr)))
        verdict = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"{target:11s} {verdict} in {elapsed:.0f} s: {summary}"
              + (f"; known bugs hit: {', '.join(known)}" if known else ""), flush=True)
        if proc.returncode != 0:
            failed.append(target)
            print(proc.stderr[-4000:], file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", choices=TARGET_NAMES)
    parser.add_argument("--all", action="store_true", help="fuzz every target in turn")
    parser.add_argument("--seconds", type=int, default=60, help="per target, with --all")
    parser.add_argument("--runs", type=int, default=0,
                        help="per target, with --all: a fixed number of inputs instead")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts") / "fuzz",
                        help="corpus, dictionaries and crashing inputs go here")
    parser.add_argument("--strict", action="store_true",
                        help="stop at known bugs too (fuzz/known.py)")
    parser.add_argument("--list", action="store_true", help="print the target names")
    args, rest = parser.parse_known_args(argv)
    if args.list:
        print("\n".join(TARGET_NAMES))
        return 0
    options = [f"--artifacts={args.artifacts}", *(["--strict"] if args.strict else [])]
    if args.all:
        limit = ([f"-runs={args.runs}", "-seed=1"] if args.runs
                 else [f"-max_total_time={args.seconds}"])
        return fuzz_all(TARGET_NAMES, [*limit, *rest], options)
    if args.target is None:
        parser.error("name a target, or use --all or --list")
    fuzz_one(args.target, rest, artifacts=args.artifacts, strict=args.strict)
    return 0


if __name__ == "__main__":
    sys.exit(main())

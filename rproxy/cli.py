"""The `rproxy` command: run (-c), test a config (-t), signal a master (-s)."""
from __future__ import annotations

import argparse
import os
import sys

from . import errorlog
from ._version import __version__

DEFAULT_CONFIG = "/etc/rproxy/rproxy.conf"


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="rproxy",
        description="A pre-fork HTTP reverse proxy speaking RProxy's configuration language.")
    ap.add_argument("-c", "--config", default=None, metavar="FILE",
                    help=f"configuration file (default: {DEFAULT_CONFIG})")
    ap.add_argument("-t", "--test", action="store_true",
                    help="check the configuration, print a summary and exit (0 = valid)")
    ap.add_argument("-v", "--version", action="version", version=f"rproxy {__version__}")
    ap.add_argument("legacy_config", nargs="?", metavar="CONFIG",
                    help="configuration file as a bare argument, as the original RProxy took it")
    args = ap.parse_args(argv)
    args.config = args.config or args.legacy_config or DEFAULT_CONFIG
    return args


def load_config(path: str):
    from .config import ConfigErrors, load

    try:
        return load(path)
    except ConfigErrors as e:
        sys.stderr.write(e.render() + "\n")
        return None


def cmd_test(path: str) -> int:
    """`rproxy -t`: every error of the file on stderr and exit 1, or the
    summary (with notes and the not-yet-active list) on stdout and exit 0."""
    from .config import ConfigErrors, load
    from .config.summary import summary

    try:
        cfg = load(path)
    except ConfigErrors as e:
        sys.stderr.write(e.render() + "\n")
        count = len(e.errors)
        sys.stderr.write(f"rproxy: configuration {path} is invalid "
                         f"({count} error{'s' if count != 1 else ''})\n")
        return 1
    sys.stdout.write(summary(cfg))
    sys.stdout.write(f"rproxy: configuration {path} is valid\n")
    return 0


def cmd_run(path: str) -> int:
    cfg = load_config(path)
    if cfg is None:
        return 1
    from .master.arbiter import Arbiter

    errorlog.configure(2, "info")
    arbiter = Arbiter(cfg)
    try:
        arbiter.bind_listeners()
    except OSError as e:
        errorlog.log("emerg", f"cannot listen: {e.strerror or e}")
        return 1
    return arbiter.run()


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.test:
        return cmd_test(args.config)
    if not os.path.exists(args.config):
        sys.stderr.write(f"rproxy: {args.config}: no such file\n")
        return 1
    return cmd_run(args.config)


if __name__ == "__main__":
    sys.exit(main())

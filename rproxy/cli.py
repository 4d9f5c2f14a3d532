"""The `rproxy` command: run (-c), test a config (-t), signal a master (-s),
watch a running one (`rproxy top`)."""
from __future__ import annotations

import os
import sys

from . import errorlog
from ._version import __version__

DEFAULT_CONFIG = "/etc/rproxy/rproxy.conf"
SIGNAL_COMMANDS = ("reload", "stop", "quit", "reopen")


def run_config_of(argv):
    """The FILE of the plain run forms `-c FILE`, `--config FILE`,
    `--config=FILE` or a bare `FILE`, else None.  A master runs for months:
    these forms are read without argparse, which would stay in memory (with
    the shutil, bz2 and lzma its help formatter imports) in the master and
    in every worker forked from it."""
    if len(argv) == 2 and argv[0] in ("-c", "--config") and not argv[1].startswith("-"):
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--config=") and len(argv[0]) > 9:
        return argv[0][9:]
    if len(argv) == 1 and not argv[0].startswith("-"):
        return argv[0]
    return None


def parse_args(argv):
    import argparse

    ap = argparse.ArgumentParser(
        prog="rproxy",
        description="A pre-fork HTTP reverse proxy speaking RProxy's configuration language.")
    ap.add_argument("-c", "--config", default=None, metavar="FILE",
                    help=f"configuration file (default: {DEFAULT_CONFIG})")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("-t", "--test", action="store_true",
                      help="check the configuration, print a summary and exit (0 = valid)")
    mode.add_argument("-s", "--signal", choices=SIGNAL_COMMANDS,
                      help="signal the running master found through the configuration's pidfile: "
                           "reload (SIGHUP), stop (SIGTERM), quit (SIGQUIT, graceful), "
                           "reopen (SIGUSR1, log files)")
    ap.add_argument("-p", "--pidfile", default=None, metavar="FILE",
                    help="with -s: the master's pidfile, instead of the one the configuration names")
    ap.add_argument("-v", "--version", action="version", version=f"rproxy {__version__}")
    ap.add_argument("legacy_config", nargs="?", metavar="CONFIG",
                    help="configuration file as a bare argument, as the original RProxy took it")
    args = ap.parse_args(argv)
    args.config = args.config or args.legacy_config or DEFAULT_CONFIG
    if args.pidfile and not args.signal:
        ap.error("-p/--pidfile only goes with -s")
    return args


def load_config(path: str, isolated: bool = False):
    """The Config of `path`, or None with its errors on stderr.  isolated:
    parsed in a child process, so that this one never imports the parser
    (the master: see config/isolated.py)."""
    from .config import ConfigErrors

    if isolated:
        from .config.isolated import load
    else:
        from .config import load

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
    from . import tls
    from .acme import cli as acme_cli

    if tls.needed(cfg):
        # certificates, keys, CAs and CRLs loaded as a start would load them
        try:
            acme_cli.build_for_test(cfg)
        except tls.TlsError as e:
            sys.stderr.write(f"{e}\nrproxy: configuration {path} is invalid (TLS)\n")
            return 1
    acme_lines, acme_errors = acme_cli.test_lines(cfg)
    if acme_errors:
        sys.stderr.write("\n".join(acme_errors) + f"\nrproxy: configuration {path} is invalid (acme)\n")
        return 1
    sys.stdout.write(summary(cfg))
    if acme_lines:
        sys.stdout.write("\n".join(acme_lines) + "\n")
    sys.stdout.write(f"rproxy: configuration {path} is valid\n")
    return 0


def cmd_run(path: str) -> int:
    cfg = load_config(path, isolated=True)
    if cfg is None:
        return 1
    from .master.startup import run_master

    errorlog.configure(2, "info")
    return run_master(cfg)


def cmd_signal(command: str, path: str, pidfile_path=None) -> int:
    """-s: find the master through the pidfile and signal it.  The
    configuration is read for its pidfile (unless -p names one); for reload
    it must also be valid, since the master would refuse it anyway."""
    from .master import control

    cfg = None
    if pidfile_path is None or command == "reload":
        cfg = load_config(path) if os.path.exists(path) else None
        if cfg is None:
            why = "is invalid" if os.path.exists(path) else "does not exist"
            if command == "reload":
                sys.stderr.write(f"rproxy: -s reload: {path} {why}: not reloading "
                                 "(the running master keeps its configuration)\n")
                return 1
            if pidfile_path is None:
                sys.stderr.write(f"rproxy: -s {command}: {path} {why}, so its pidfile is unknown; "
                                 "name it with -p FILE\n")
                return 1
    if pidfile_path is None:
        pidfile_path = cfg.pidfile
        if not pidfile_path:
            sys.stderr.write(f"rproxy: -s {command}: {path} sets no pidfile, so the master cannot be "
                             "found (add `pidfile = /run/rproxy/rproxy.pid`, or name it with -p)\n")
            return 1
    return control.send(command, pidfile_path)


def missing_part():
    """Why this copy of rproxy cannot run (None: it can): its compiled core
    (`rproxy._fastpath`, with llhttp) or a dependency does not import, as in
    a source checkout that was never built, or a broken install."""
    try:
        from . import fastpath  # noqa: F401  (llhttp's symbols, then the compiled core)
    except ImportError as e:
        return str(e) or type(e).__name__
    import importlib.util

    if importlib.util.find_spec("lark") is None:       # imported by the parser only, not here
        return "No module named 'lark'"
    return None


def explain_missing(why: str) -> None:
    """Say what to do instead of a traceback."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(pkg)
    if os.path.exists(os.path.join(root, "setup.py")) and os.path.exists(os.path.join(pkg, "_fastpath.pyx")):
        sys.stderr.write(
            f"rproxy: cannot run from the source checkout {root}: {why}\n"
            "  This is the source tree, without its compiled core (`python -m rproxy` run inside a checkout\n"
            "  imports the source tree, never an installed copy).  Either:\n"
            "    ./quickstart.sh      creates ./.venv, installs rproxy into it and runs it with a demo downstream\n"
            "    pip install .        (in a virtual environment), then run the installed `rproxy` command,\n"
            "                         e.g. .venv/bin/rproxy -c rproxy.conf\n"
            "  To work on the source tree itself: python setup.py build_ext --inplace\n")
    else:
        sys.stderr.write(
            f"rproxy: this installation of rproxy ({pkg}) is incomplete: {why}\n"
            "  Reinstall it (pip install --force-reinstall ., or the rproxy package of your distribution).\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["certs"]:
        from .acme import cli as acme_cli

        return acme_cli.main(argv[1:])
    if argv[:1] == ["top"]:
        from .metrics import top

        return top.main(argv[1:])
    path = run_config_of(argv)
    if path is not None:
        why = missing_part()
        if why is not None:
            explain_missing(why)
            return 1
        if not os.path.exists(path):
            sys.stderr.write(f"rproxy: {path}: no such file\n")
            return 1
        return cmd_run(path)
    args = parse_args(argv)
    why = missing_part()
    if why is not None:
        explain_missing(why)
        return 1
    if args.test:
        return cmd_test(args.config)
    if args.signal:
        return cmd_signal(args.signal, args.config, args.pidfile)
    if not os.path.exists(args.config):
        sys.stderr.write(f"rproxy: {args.config}: no such file\n")
        return 1
    return cmd_run(args.config)


if __name__ == "__main__":
    sys.exit(main())

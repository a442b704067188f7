"""switchyard's site hook: Python stacks on SIGUSR1 from every Python rank, SDK or not.

switchyard puts this folder (sdk/python) on PYTHONPATH for every rank it launches, so Python imports this module at
interpreter start (the `site` module imports the first `sitecustomize` on sys.path). For a process launched by
switchyard (SWITCHYARD_JOB is set) it registers faulthandler for SIGUSR1: on a hang the supervisor sends SIGUSR1 and the
rank writes every thread's Python stack to stderr (its log) and goes on running. A script without the SDK is never
killed by the dump: the supervisor signals only processes that catch SIGUSR1 (SigCgt in /proc/PID/status).

The distribution's own sitecustomize (Debian: /usr/lib/python3.11/sitecustomize.py, which installs apport's hook)
would be shadowed by this one: it is found further down sys.path and run after ours. SWITCHYARD_STACKS=0 turns the
hook off. Nothing here may raise or cost more than a few microseconds: it runs in every Python process of a rank.
"""

import os
import sys


def _register_stack_dump():
    if not os.environ.get("SWITCHYARD_JOB") or os.environ.get("SWITCHYARD_STACKS") == "0":
        return
    import signal

    sigusr1 = getattr(signal, "SIGUSR1", None)
    if sigusr1 is None:
        return
    try:
        import faulthandler

        # Only the default action (terminate) or nothing is replaced: a handler the environment set on purpose stays.
        if signal.getsignal(sigusr1) not in (signal.SIG_DFL, None):
            return
        # chain=False: the previous disposition is SIG_DFL, which would end the process after the dump.
        faulthandler.register(sigusr1, file=sys.stderr, all_threads=True, chain=False)
    except Exception:
        pass  # no usable stderr (closed, or without a file descriptor): no stacks, but never a failed start


def _chain_next_sitecustomize():
    """Runs the next `sitecustomize` on sys.path after this one's folder (the distribution's), as `site` would have."""
    try:
        import importlib.machinery
        import importlib.util

        here = os.path.dirname(os.path.abspath(__file__))
        rest = []
        seen_here = False
        for entry in sys.path:
            try:
                same = os.path.abspath(entry or os.curdir) == here
            except Exception:
                same = False
            if same:
                seen_here = True
                continue
            if seen_here:
                rest.append(entry)
        if not seen_here:
            return
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
            return
        module = importlib.util.module_from_spec(spec)
        # While it runs it is `sitecustomize`, as it would have been; afterwards this module stays registered.
        this = sys.modules.get(__name__)
        sys.modules["sitecustomize"] = module
        try:
            spec.loader.exec_module(module)
        finally:
            if this is not None:
                sys.modules["sitecustomize"] = this
        globals()["chained"] = spec.origin
    except Exception as err:  # as site.py does: a broken sitecustomize is reported, never fatal
        try:
            sys.stderr.write("switchyard: the next sitecustomize failed: %s: %s\n" % (type(err).__name__, err))
        except Exception:
            pass


#: The distribution's sitecustomize this hook ran after itself (its path), or None.
chained = None
_register_stack_dump()
_chain_next_sitecustomize()

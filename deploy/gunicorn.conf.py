"""gunicorn settings for the IBEX broker and connectors (``ibex broker|connector serve``).

Every value can be overridden with an ``IBEX_GUNICORN_*`` environment variable; the bind address
comes from the command line. Workers are processes (each opens its own SQLCipher connections and
its own audit committer thread after the fork; no preloading), threads serve concurrent requests
inside a worker while the fan-out waits on partners.

Logs are JSON lines (``ibex.logs``): no message arguments, no query strings, no criteria values.
Metrics: every worker writes its samples under ``PROMETHEUS_MULTIPROC_DIR`` (a private temporary
directory unless the operator names one, e.g. systemd's ``RuntimeDirectory``), and ``/metrics``
on any worker adds up all of them. The directory is emptied when the server starts.
"""

import multiprocessing
import os
import tempfile
from pathlib import Path

from ibex.logs import logconfig as _json_logconfig

_cpus = multiprocessing.cpu_count()

workers = int(os.environ.get("IBEX_GUNICORN_WORKERS", str(max(2, _cpus))))
threads = int(os.environ.get("IBEX_GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("IBEX_GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("IBEX_GUNICORN_GRACEFUL_TIMEOUT", "10"))
keepalive = int(os.environ.get("IBEX_GUNICORN_KEEPALIVE", "30"))
preload_app = False
# The request line without its query string: no criteria or tokens ever reach the access log.
# ibex.logs.JsonFormatter keeps only the method, path, status, size, duration and request id.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
loglevel = os.environ.get("IBEX_GUNICORN_LOGLEVEL", "warning")
logconfig_dict = _json_logconfig(loglevel, os.environ.get("IBEX_GUNICORN_ACCESSLOG") or None)
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
proc_name = os.environ.get("IBEX_GUNICORN_PROC_NAME", "ibex")
# gunicorn's control socket lives in $HOME/.gunicorn and would be shared by every instance on the
# host (a broker and its connectors); a hardened unit has no writable home. IBEX does not use it.
control_socket_disable = True

# prometheus-client reads the variable when a worker first imports it, after the fork.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ibex-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server: object) -> None:
    """Start from zero: samples left by a previous run would be added to this one's."""
    path = Path(_metrics_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def child_exit(server: object, worker: object) -> None:
    """A dead worker's live gauges stop counting; its counters and histograms stay summed."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(getattr(worker, "pid", 0), _metrics_dir)

"""gunicorn settings for the IBEX broker and connectors (``ibex broker|connector serve``).

Every value can be overridden with an ``IBEX_GUNICORN_*`` environment variable; the bind address
comes from the command line. Workers are processes (each opens its own SQLCipher connections and
its own audit committer thread after the fork; no preloading), threads serve concurrent requests
inside a worker while the fan-out waits on partners.
"""

import multiprocessing
import os

_cpus = multiprocessing.cpu_count()

workers = int(os.environ.get("IBEX_GUNICORN_WORKERS", str(max(2, _cpus))))
threads = int(os.environ.get("IBEX_GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("IBEX_GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("IBEX_GUNICORN_GRACEFUL_TIMEOUT", "10"))
keepalive = int(os.environ.get("IBEX_GUNICORN_KEEPALIVE", "30"))
preload_app = False
# The request line without its query string: no criteria or tokens ever reach the access log.
accesslog = os.environ.get("IBEX_GUNICORN_ACCESSLOG") or None
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
errorlog = "-"
loglevel = os.environ.get("IBEX_GUNICORN_LOGLEVEL", "warning")
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
proc_name = os.environ.get("IBEX_GUNICORN_PROC_NAME", "ibex")

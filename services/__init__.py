"""Lüyue's services: order_ingest (a webhook and a worker process), dispatch, logistics, aftersale."""

import sys

# httpx imports its command-line client whenever click, rich and pygments are installed (our own CLI
# needs rich): about 5 MiB in every service process, for a command no service runs. A None entry
# makes that import fail as if they were missing, and httpx defines its stub `main` instead.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

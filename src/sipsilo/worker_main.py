"""Entry point of one worker process, started by the supervisor (not by hand).

It reads the configuration from the link (``workers.worker``) and runs the
whole server (``app``) with the worker's context. It lives beside ``app``
rather than in ``workers`` so that the workers package never imports ``app``.
"""

from __future__ import annotations

import sys

from sipsilo import app
from sipsilo.transport.worker_link import LinkClosed
from sipsilo.workers.worker import context_from_link


def main() -> None:
    try:
        config, ctx = context_from_link()
    except LinkClosed:
        sys.exit(1)
    try:
        app.run(config, worker=ctx)
    except KeyboardInterrupt:
        pass
    except LinkClosed:
        sys.exit(1)  # the supervisor failed to start and says why
    except Exception as exc:  # one line, like `sipsilo serve`
        print(f"sipsilo worker {ctx.index}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

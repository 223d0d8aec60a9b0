"""A warm executor for a SuperNode: runs loladeft's ClientApp tasks in one long-lived process.

Why
---
In flwr 1.42 a SuperNode in its default ``subprocess`` isolation hands every message to a
SuperExec, which starts a fresh ``flwr-clientapp`` process for it. For DEFT that process
imports torch and transformers and rebuilds the model for every message, seconds of work
for a step that computes in a fraction of that, twice per round (``query`` and ``train``).

What it does
------------
A SuperNode started with ``--isolation process`` leaves task execution to an external
process connected to its Runtime API. This executor is that process: it acquires ClientApp
tasks from the SuperNode as ``flower-superexec`` does, and runs each one *in this process*
with Flower's own ``flwr-clientapp`` steps (pull the task's message and context, call the
ClientApp, push the reply and the task's final status) instead of spawning a process. The
ClientApp is :data:`loladeft.runtime.app.client_app`, imported once; its model cache
(:func:`loladeft.runtime.device.engine`) stays warm across messages. Node state still lives
in Flower's ``Context.state`` only, exactly as with fresh processes.

This needs Flower internals: the code is in :mod:`loladeft.runtime.flower_patches`
(:func:`~loladeft.runtime.flower_patches.serve_tasks`) and runs only on the Flower version it
was written for; :mod:`loladeft.runtime.supernode` does not start it otherwise.

Run it next to a SuperNode (``python -m loladeft.runtime.supernode --loladeft-warm ...``
starts both), or by hand::

    flower-supernode --isolation process --host 127.0.0.1 --port 9094 ... &
    python -m loladeft.runtime.executor --runtime-api-address 127.0.0.1:9094 --insecure
"""

from __future__ import annotations

import argparse

from loladeft.runtime import flower_patches


def main(argv: list[str] | None = None) -> None:
    """``python -m loladeft.runtime.executor --runtime-api-address HOST:PORT ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime-api-address", required=True)
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--insecure", action="store_true")
    tls.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    if not flower_patches.active():
        raise SystemExit(
            f"loladeft executor: needs flwr {flower_patches.WRITTEN_FOR}.x with the patches on "
            "(run flower-supernode without --isolation process instead)"
        )
    if args.parent_pid is not None:
        flower_patches.exit_with_parent(args.parent_pid)
    flower_patches.serve_tasks(args.runtime_api_address, args.insecure, args.root_certificates)


if __name__ == "__main__":
    main()

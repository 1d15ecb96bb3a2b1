"""Drive the real ts-topy client (PyPI ts-topy==0.5.1) against a Teraslice mock.

Usage: python check.py URL

1. TerasliceClient parses every endpoint ts-topy reads (its pydantic models are the contract),
   plus /v1/cluster/state node by node, every job and execution by id.
2. The TUI's own refresh path (TerasliceApp.fetch_data) runs without its "Error:" banner.
3. The Textual app, headless, fills its three tables, and Enter on a row opens the modal.
Exits non-zero with a message on the first failure.
"""

import asyncio
import sys

from ts_topy.app import TerasliceApp
from ts_topy.client import TerasliceClient
from ts_topy.models import Node


def fail(message):
    print(f"ts-topy check FAILED: {message}")
    sys.exit(1)


def check_client(url):
    with TerasliceClient(url) as client:
        controllers = client.fetch_controllers()
        jobs = client.fetch_jobs(size=1000)
        executions = client.fetch_execution_contexts(size=1000)
        if not jobs or not executions:
            fail(f"empty lists: {len(jobs)} jobs, {len(executions)} executions")
        for job in jobs:
            client.fetch_job_by_id(job.job_id)
        for ex in executions:
            detail = client.fetch_execution_context_by_id(ex.ex_id)
            if detail["job_id"] != ex.job_id:
                fail(f"execution {ex.ex_id} changed job")
        state = client._fetch_json("/v1/cluster/state")
        nodes = [Node(**node) for node in state.values()]
        # The TUI sorts by these; mixing aware and naive datetimes would raise here.
        sorted(jobs, key=lambda j: j.updated)
        sorted(executions, key=lambda e: e.updated)
        sorted(controllers, key=lambda c: c.started if c.started else "")
    print(f"client: {len(controllers)} controllers, {len(jobs)} jobs, {len(executions)} executions, {len(nodes)} nodes")


def check_refresh(url):
    app = TerasliceApp(url=url)
    calls = []
    app.call_from_thread = lambda fn, *args: calls.append(args)
    app.fetch_data()
    if not calls:
        fail("fetch_data reported nothing")
    banner = calls[-1][0]
    if str(banner).startswith("[b red]Error"):
        fail(f"the TUI's refresh failed: {banner}")
    print(f"refresh: {banner}")


async def check_tui(url):
    from textual.widgets import DataTable

    app = TerasliceApp(url=url, interval=60)
    async with app.run_test(size=(220, 60)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        tables = list(app.query(DataTable))
        counts = {table.id: table.row_count for table in tables}
        if not any(counts.values()):
            fail(f"the TUI shows empty tables: {counts}")
        for table in tables:
            if table.row_count == 0:
                continue
            table.focus()
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            if len(app.screen_stack) < 2:
                fail(f"Enter on {table.id} opened no detail modal")
            await pilot.press("escape")
            await pilot.pause()
        print(f"tui: rows {counts}; every table's detail modal opened")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    url = sys.argv[1].rstrip("/")
    check_client(url)
    check_refresh(url)
    asyncio.run(check_tui(url))
    print("ts-topy check passed")


if __name__ == "__main__":
    main()

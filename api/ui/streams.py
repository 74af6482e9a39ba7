"""Server-Sent Events for the pages, authenticated by the cookie (EventSource cannot send a header).

The job page uses the API's own stream (api/routes/events.py `stream_events`). The jobs list opens ONE
stream for all the unfinished jobs it shows, not one per job: a browser keeps at most 6 HTTP/1.1
connections per host, so a page with many running jobs would otherwise starve its own requests. That
stream runs the API's `job_events` generator once per job, concurrently, and forwards their events
tagged with the job id (`{"job": id, ...}`), leaving out log lines; `event: end` says every watched
job has finished.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.routes.events import job_events

NO_LOGS = 2**62  # "after this log id": the list's streams read no log lines
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _tagged(job_id: str):
    def frame(name: str, data: Any, _last_log: int) -> str:
        if name == "log":
            return ""
        return f"event: {name}\ndata: {json.dumps({'job': job_id, **data}, separators=(',', ':'))}\n\n"
    return frame


class JobsEvents(StreamingResponse):
    """text/event-stream merging job_events of several jobs. It writes to the connection itself (not
    through a generator), so its task group lives in one task from start to end."""

    def __init__(self, request: Request, job_ids: Sequence[str]):
        super().__init__(iter(()), media_type="text/event-stream", headers=STREAM_HEADERS)
        self.request = request
        self.sources = [job_events(request, job_id, NO_LOGS, frame=_tagged(job_id)) for job_id in job_ids]
        self.heartbeat = request.app.state.settings.events_heartbeat_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def body(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        merged_in, merged_out = anyio.create_memory_object_stream[str](64)

        async def pump(source: AsyncIterator[str], out: MemoryObjectSendStream[str]) -> None:
            async with out:
                async for chunk in source:
                    if chunk.startswith("event:"):  # this stream sends its own retry and heartbeats
                        await out.send(chunk)

        try:
            async with anyio.create_task_group() as tasks:
                for source in self.sources:
                    tasks.start_soon(pump, source, merged_in.clone())
                merged_in.close()
                await body("retry: 2000\n\n")
                async with merged_out:
                    while True:
                        with anyio.move_on_after(self.heartbeat) as idle:
                            try:
                                chunk = await merged_out.receive()
                            except anyio.EndOfStream:
                                break
                            await body(chunk)
                        if idle.cancel_called:
                            await body(": keep-alive\n\n")
                await body("event: end\ndata: {}\n\n")
        except OSError:  # the client went away mid-write
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

"""A local HTTP sink for the NGSI-LD bench: reads each request whole and answers
204 at once, without parsing or checking the body, so a drain measures the
uplink's own cost (mapping, JSON, HTTP) and not a broker's."""

from __future__ import annotations

import asyncio

ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Sink:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                self.requests += 1
                self.bytes += length
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run(self, ready, stop) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        ready(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, stop)
        server.close()


def serve(conn) -> None:
    """Child process: send the port, serve until told to stop, send the counts."""
    sink = Sink()
    asyncio.run(sink.run(conn.send, conn.recv))
    conn.send({"requests": sink.requests, "bytes": sink.bytes})

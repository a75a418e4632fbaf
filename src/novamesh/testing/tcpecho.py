"""A TCP echo app for tests and demos: answers every chunk with ``<prefix>`` + the chunk.

Run by an agent as ``python -m novamesh.testing.tcpecho [PREFIX]``: it listens on ``$HOST:$PORT``
(what ``novamesh run`` sets for the app). ``{version}`` in PREFIX becomes ``$NOVAMESH_VERSION``,
so a reply names the workload that served it (``tcpecho/{version}:`` gives ``tcpecho/v1:ping``).
"""

from __future__ import annotations

import asyncio
import os
import sys

__all__ = ["main", "serve"]


async def serve(host: str, port: int, prefix: bytes) -> None:
    """Echo with ``prefix`` on ``host:port`` until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(prefix + data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    prefix = (args[0] if args else "tcpecho:").replace("{version}", os.environ.get("NOVAMESH_VERSION", ""))
    asyncio.run(serve(os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"]), prefix.encode()))


if __name__ == "__main__":
    main()

"""A TCP proxy that adds a fixed one-way delay, to model a distant server on loopback.

Run as ``python -m bench.proxy --target http://127.0.0.1:PORT --delay 0.02``;
it prints ``{"url": ...}`` once ready.  Every byte is delivered ``delay``
seconds after it arrived, in order, in both directions, so a request and its
answer cost one round trip (2 x delay) more than on loopback.

Opening a connection costs a round trip on a real network (the TCP
handshake), but a loopback connect to the proxy is instant; so the first
bytes of each connection are held until one round trip after it was
accepted.  TLS, which would add one or two more, is not modelled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from yarl import URL

from bench.common import announce

__all__ = ["DelayProxy", "main"]

_READ = 64 * 1024


class DelayProxy:
    def __init__(self, host: str, port: int, delay: float) -> None:
        self.host = host
        self.port = port
        self.delay = delay

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        handshake_done = loop.time() + 2 * self.delay
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_writer.close()
            return
        # Cancelled only when the proxy stops; the connection simply ends then.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, not_before=handshake_done),
                self._pump(upstream_reader, client_writer, not_before=0.0),
                return_exceptions=True,
            )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, not_before: float) -> None:
        """Copy ``reader`` to ``writer``, each piece ``delay`` after it arrived (and not before ``not_before``)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliver = asyncio.ensure_future(self._deliver(queue, writer))
        try:
            while data := await reader.read(_READ):
                queue.put_nowait((max(loop.time(), not_before) + self.delay, data))
        except OSError:
            pass  # a reset ends the copy like an end of stream
        finally:
            queue.put_nowait((loop.time() + self.delay, b""))
            await deliver

    @staticmethod
    async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def _serve(target: str, delay: float, port: int) -> None:
    url = URL(target)
    proxy = DelayProxy(url.host or "127.0.0.1", url.port or 80, delay)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    bound = server.sockets[0].getsockname()[1]
    announce(url=f"http://127.0.0.1:{bound}", delay=delay)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the server behind the proxy, http://host:port")
    parser.add_argument("--delay", type=float, default=0.02, help="one-way delay in seconds")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.target, args.delay, args.port))


if __name__ == "__main__":
    main()

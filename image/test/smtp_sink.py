"""A minimal SMTP receiver for the image's lab (standard library only): listens on port 25 of
every address of its namespace (mx1 and mx2), accepts every message and stores it in --spool.
It stops by itself after --max-seconds."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path


class Session:
    def __init__(self, spool: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.spool, self.reader, self.writer = spool, reader, writer
        local = writer.get_extra_info("sockname")
        self.local = local[0] if local else "?"

    async def reply(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()

    async def run(self) -> None:
        await self.reply(f"220 {self.local} ESMTP mxknock-lab-sink")
        mail_from, rcpts = "", []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), 60)
            if not raw:
                return
            verb = raw.decode(errors="replace").strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                await self.reply(f"250 {self.local}")
            elif verb == "MAIL":
                mail_from, rcpts = raw.decode(errors="replace").strip(), []
                await self.reply("250 OK")
            elif verb == "RCPT":
                rcpts.append(raw.decode(errors="replace").strip())
                await self.reply("250 OK")
            elif verb == "DATA":
                await self.reply("354 go ahead")
                body = []
                while True:
                    line = await asyncio.wait_for(self.reader.readline(), 60)
                    if not line or line in (b".\r\n", b".\n"):
                        break
                    body.append(line)
                name = self.spool / f"{time.time():.6f}-{self.local}.eml"
                head = f"X-Lab-Received-On: {self.local}\r\nX-Lab-Envelope: {mail_from} {rcpts}\r\n"
                name.write_bytes(head.encode() + b"".join(body))
                await self.reply("250 OK stored")
            elif verb == "QUIT":
                await self.reply("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                await self.reply("250 OK")
            else:
                await self.reply("502 not implemented")


async def serve(spool: Path, port: int, max_seconds: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await Session(spool, reader, writer).run()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host=["0.0.0.0", "::"], port=port, reuse_address=True)
    print(f"smtp_sink: listening on port {port}, spool {spool}", flush=True)
    async with server:
        await asyncio.sleep(max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spool", required=True, type=Path)
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    args.spool.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(serve(args.spool, args.port, args.max_seconds))
    except KeyboardInterrupt:  # Ctrl-C in `make vm` reaches the whole process group
        pass


if __name__ == "__main__":
    main()

"""A real Matrix client (matrix-nio) logs in and downloads one mxc URI.

Usage: nio_download.py BASE_URL USER PASSWORD MXC
Prints one JSON line: the sha256 and size of the bytes downloaded and the content type.
"""
import asyncio
import hashlib
import json
import sys

from nio import AsyncClient, DownloadResponse, LoginResponse


async def main(base_url: str, user: str, password: str, mxc: str) -> None:
    client = AsyncClient(base_url, user)
    try:
        login = await client.login(password)
        if not isinstance(login, LoginResponse):
            raise SystemExit(f"login failed: {login}")
        downloaded = await client.download(mxc=mxc)
        if not isinstance(downloaded, DownloadResponse):
            raise SystemExit(f"download failed: {downloaded}")
        print(json.dumps({
            "sha256": hashlib.sha256(downloaded.body).hexdigest(),
            "size": len(downloaded.body),
            "content_type": downloaded.content_type,
        }))
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

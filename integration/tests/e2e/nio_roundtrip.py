"""A real Matrix client (matrix-nio) logs in, uploads a file and downloads it back.

Usage: nio_roundtrip.py BASE_URL USER PASSWORD FILE
Prints one JSON line: the content URI, the sha256 of the bytes downloaded, their size and
the content type and filename the server sent back.
"""
import asyncio
import hashlib
import json
import os
import sys

from nio import AsyncClient, DownloadResponse, LoginResponse, UploadResponse


async def main(base_url: str, user: str, password: str, path: str) -> None:
    client = AsyncClient(base_url, user)
    try:
        login = await client.login(password)
        if not isinstance(login, LoginResponse):
            raise SystemExit(f"login failed: {login}")
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            uploaded, _ = await client.upload(
                f, content_type="image/png", filename="nio upload 🐈.png", filesize=size
            )
        if not isinstance(uploaded, UploadResponse):
            raise SystemExit(f"upload failed: {uploaded}")
        downloaded = await client.download(mxc=uploaded.content_uri)
        if not isinstance(downloaded, DownloadResponse):
            raise SystemExit(f"download failed: {downloaded}")
        print(json.dumps({
            "content_uri": uploaded.content_uri,
            "sha256": hashlib.sha256(downloaded.body).hexdigest(),
            "size": len(downloaded.body),
            "content_type": downloaded.content_type,
            "filename": downloaded.filename,
        }))
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

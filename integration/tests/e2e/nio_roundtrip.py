"""A real Matrix client (matrix-nio) logs in, uploads an image, downloads it back and gets
its 32x32 crop thumbnail.

Usage: nio_roundtrip.py BASE_URL USER PASSWORD FILE
Prints one JSON line: the content URI, the sha256 of the bytes downloaded, their size and
the content type and filename the server sent back, and the thumbnail's sha256 and type.
"""
import asyncio
import hashlib
import json
import os
import sys

from nio import AsyncClient, DownloadResponse, LoginResponse, ThumbnailResponse, UploadResponse
from nio.api import ResizingMethod


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
        server_name, media_id = uploaded.content_uri[len("mxc://"):].split("/", 1)
        thumb = await client.thumbnail(server_name, media_id, 32, 32, method=ResizingMethod.crop)
        if not isinstance(thumb, ThumbnailResponse):
            raise SystemExit(f"thumbnail failed: {thumb}")
        print(json.dumps({
            "thumbnail_sha256": hashlib.sha256(thumb.body).hexdigest(),
            "thumbnail_type": thumb.content_type,
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

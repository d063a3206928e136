"""A local stand-in for the Hugging Face hub: the HTTP endpoints `huggingface_hub.snapshot_download`
uses (repo info, file tree, file resolve), serving each repo from a folder at one commit.

huggingface_hub reads HF_ENDPOINT at import, so point it at `FakeHub.url` in a fresh process;
its real download code then fills a real hub cache. `requested` names every file body served.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # every repo's only revision


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, repos: dict[str, Path]):
        self.repos = repos
        self.requested: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub.respond(self, send_body=True)

            def do_HEAD(self):
                hub.respond(self, send_body=False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def respond(self, request: BaseHTTPRequestHandler, send_body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        for repo_id, folder in self.repos.items():
            files = sorted(f for f in folder.iterdir() if f.is_file())
            if path.startswith(f"/api/models/{repo_id}/revision/"):
                siblings = [{"rfilename": f.name} for f in files]
                return self._send(request, json.dumps({"id": repo_id, "sha": COMMIT, "siblings": siblings}).encode())
            if path.startswith(f"/api/models/{repo_id}/tree/"):
                tree = [
                    {"type": "file", "path": f.name, "size": f.stat().st_size, "oid": git_blob_id(f.read_bytes())}
                    for f in files
                ]
                return self._send(request, json.dumps(tree).encode())
            if path.startswith(f"/{repo_id}/resolve/"):
                name = path.removeprefix(f"/{repo_id}/resolve/").split("/", 1)[1]
                if not (folder / name).is_file():
                    return self._send(request, b"", status=404, headers={"X-Error-Code": "EntryNotFound"})
                data = (folder / name).read_bytes()
                if send_body:
                    self.requested.append(name)
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
                return self._send(request, data if send_body else b"", length=len(data), headers=headers)
        self._send(request, b"", status=404, headers={"X-Error-Code": "RepoNotFound"})

    @staticmethod
    def _send(request, body: bytes, status: int = 200, length: int | None = None, headers: dict | None = None) -> None:
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body) if length is None else length))
        request.end_headers()
        request.wfile.write(body)

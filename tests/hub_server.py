"""A small Hugging Face Hub on 127.0.0.1, served from a thread of the test process.

It speaks the part of the Hub's HTTP protocol that huggingface_hub (and so transformers) uses to download
(REFERENCE.md §2): `HEAD`/`GET /{repo}/resolve/{rev}/{path}`, `GET /api/models/{repo}[/revision/{rev}]` and
`GET /api/models/{repo}/tree/{rev}[/{path}]`, with the Hub's headers and error codes. It never sends xet
headers, so clients download over plain HTTP.

Repos are made of commits (sha → files); branches and tags point at commits. Every request is logged
(method, path, query, Range, whether it carried a token) so tests can count them, and a GET of a chosen file
can be made to drop the connection or stall half-way.

    with HubServer() as hub:
        sha = hub.add_repo("org/tiny", folder)
        os.environ["HF_ENDPOINT"] = hub.url   # before huggingface_hub is imported
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Files the Hub stores with git LFS: their ETag is the sha256 of the content, not the git blob sha1.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".h5", ".msgpack", ".onnx", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE


def etag_of(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(path, data) else git_blob_sha1(data)


def read_folder(folder) -> dict[str, bytes]:
    """All files under `folder`, keyed by their `/`-separated path inside it."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            with open(full, "rb") as f:
                files[rel] = f.read()
    return files


@dataclass
class Hit:
    """One request the server received."""
    method: str
    path: str                  # unquoted, without the query string
    query: dict
    range: str | None = None
    authorized: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Fault:
    """Make the next `times` GETs of a file send `after_bytes` bytes, then drop (or stall until released)."""
    path: str
    after_bytes: int
    mode: str = "drop"  # "drop": close the connection; "stall": wait for `release`, then close it;
    #                     "slow": wait `delay` seconds, then send the rest
    times: int = 1
    delay: float = 0.5
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class Repo:
    id: str
    commits: dict = field(default_factory=dict)   # sha -> {path: bytes}
    refs: dict = field(default_factory=dict)      # branch or tag -> sha
    gated: bool = False
    private: bool = False
    granted: set = field(default_factory=set)     # tokens with access to a gated repo


class HubServer:
    """The loopback Hub. Start it with `start()` or `with`; `url` is what HF_ENDPOINT should be."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.aliases: dict[str, str] = {}      # renamed repo: old id -> new id
        self.tokens: set[str] = set()          # tokens the server accepts at all
        self.hits: list[Hit] = []
        self.faults: list[Fault] = []
        self.tree_page_size = 1000
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- repos
    def add_repo(self, repo_id: str, files, *, gated=False, private=False, branch="main") -> str:
        """Create a repo whose `branch` holds `files` (a dict path → bytes, or a folder); returns the commit sha."""
        self.repos[repo_id] = Repo(repo_id, gated=gated, private=private)
        return self.push(repo_id, files, branch=branch)

    def push(self, repo_id: str, files, *, branch="main") -> str:
        """A new commit on `branch`: its files updated with `files` (a value of None deletes a file)."""
        repo = self.repos[repo_id]
        if not isinstance(files, dict):
            files = read_folder(files)
        parent = repo.refs.get(branch)
        tree = dict(repo.commits[parent]) if parent else {}
        for path, data in files.items():
            if data is None:
                tree.pop(path, None)
            else:
                tree[path] = data if isinstance(data, bytes) else str(data).encode()
        digest = hashlib.sha1((parent or "").encode())
        for path in sorted(tree):
            digest.update(f"{path}\0{git_blob_sha1(tree[path])}\n".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = tree
        repo.refs[branch] = sha
        return sha

    def tag(self, repo_id: str, name: str, sha: str) -> None:
        self.repos[repo_id].refs[name] = sha

    def rename(self, old_id: str, new_id: str) -> None:
        """Move a repo to a new id; the old id redirects, as the Hub does for `bert-base-cased`."""
        repo = self.repos.pop(old_id)
        repo.id = new_id
        self.repos[new_id] = repo
        self.aliases[old_id] = new_id

    # ---------------------------------------------------------------------------- request counting
    def reset(self) -> None:
        with self._lock:
            self.hits.clear()

    def requests(self, *, method: str | None = None, contains: str = "") -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if (method is None or h.method == method) and contains in h.path]

    def file_downloads(self) -> list[Hit]:
        """The GETs of file contents (not HEADs, not API calls)."""
        return [h for h in self.requests(method="GET") if "/resolve/" in h.path]

    def fault(self, path: str, after_bytes: int, *, mode="drop", times=1, delay=0.5) -> Fault:
        """Make GETs of the file whose `{repo id}/{path in repo}` ends with `path` fail or pause part-way."""
        fault = Fault(path, after_bytes, mode, times, delay)
        with self._lock:
            self.faults.append(fault)
        return fault

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            for fault in self.faults:
                fault.release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------- lookups
    def _split_repo(self, parts: list[str], markers: tuple[str, ...]) -> tuple[str | None, list[str]]:
        """Split path segments into a repo id (1 or 2 segments) and the rest, which starts with a marker."""
        for n in (2, 1):
            candidate = "/".join(parts[:n])
            if candidate in self.repos or candidate in self.aliases:
                return candidate, parts[n:]
        for n in (2, 1):
            if len(parts) > n and parts[n] in markers:
                return "/".join(parts[:n]), parts[n:]
        return "/".join(parts[:2]), parts[2:]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    # ------------------------------------------------------------------------------------- helpers
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, head=False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, extra: dict | None = None, *, head=False):
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _access(self, repo: Repo, *, files: bool, head=False) -> bool:
        """Apply the Hub's rules for tokens, private and gated repos; False when an error was sent."""
        token = self._token()
        if token is not None and token not in self.hub.tokens:
            self._error(401, None, "Invalid credentials in Authorization header", head=head)
            return False
        if repo.private and token not in repo.granted:
            self._error(401, "RepoNotFound", "Repository not found", head=head)
            return False
        if repo.gated and files and token not in repo.granted:
            status = 403 if token else 401
            self._error(status, "GatedRepo", "Access to model is restricted and you are not in the authorized list.",
                        head=head)
            return False
        return True

    # -------------------------------------------------------------------------------------- routing
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path == "/_test/hits":  # for a test's subprocess to count what it caused; not itself logged
            with self.hub._lock:
                return self._json(200, [str(h) for h in self.hub.hits])
        with self.hub._lock:
            self.hub.hits.append(Hit(self.command, path, query, self.headers.get("Range"),
                                     self.headers.get("Authorization") is not None))
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "agent-harnesses"]:  # huggingface_hub's telemetry registry, once a day
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "models"] and not head:
            return self._api(parts[2:], query, url.path)
        repo_id, rest = self.hub._split_repo(parts, ("resolve",))
        if len(rest) >= 3 and rest[0] == "resolve":
            return self._resolve(repo_id, rest[1], "/".join(rest[2:]), head=head, raw_path=url.path)
        self._error(404, None, "Not found", head=head)

    # ----------------------------------------------------------------------------------- /resolve/
    def _resolve(self, repo_id: str, rev: str, path: str, *, head: bool, raw_path: str) -> None:
        hub = self.hub
        if repo_id in hub.aliases:  # a renamed repo: a relative redirect, which the client follows itself
            new = hub.aliases[repo_id]
            location = raw_path.replace(f"/{repo_id}/", f"/{new}/", 1)
            return self._send(307, b"", {"Location": location}, head=head)
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head=head)
        if not self._access(repo, files=True, head=head):
            return
        sha = repo.refs.get(rev, rev if rev in repo.commits else None)
        if sha is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + rev, head=head)
        data = repo.commits[sha].get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"",
                               {"X-Repo-Commit": sha}, head=head)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag_of(path, data)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start = 0
        status = 200
        if not head and self.headers.get("Range"):
            spec = self.headers["Range"].removeprefix("bytes=").split("-")[0]
            start = int(spec or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        fault = None if head else self._take_fault(f"{repo.id}/{path}")
        if fault is None:
            return self._send(status, body, headers, head=head)
        # Send the headers and part of the body, then fail as the fault says.
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body[:fault.after_bytes])
        self.wfile.flush()
        fault.reached.set()
        if fault.mode == "slow":  # finish after a pause: lets concurrent clients overlap
            time.sleep(fault.delay)
            self.wfile.write(body[fault.after_bytes:])
            return
        if fault.mode == "stall":
            fault.release.wait(timeout=60)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _take_fault(self, path: str) -> Fault | None:
        with self.hub._lock:
            for fault in self.hub.faults:
                if fault.times > 0 and path.endswith(fault.path):
                    fault.times -= 1
                    return fault
        return None

    # ---------------------------------------------------------------------------------- /api/models
    def _api(self, parts: list[str], query: dict, raw_path: str) -> None:
        hub = self.hub
        repo_id, rest = hub._split_repo(parts, ("revision", "tree"))
        repo_id = hub.aliases.get(repo_id, repo_id)  # the API answers for a renamed repo under its new id
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if not self._access(repo, files=False):
            return
        if rest and rest[0] == "revision" and len(rest) >= 2:
            rev, kind, sub = "/".join(rest[1:]), "info", ""
        elif rest and rest[0] == "tree" and len(rest) >= 2:
            rev, kind, sub = rest[1], "tree", "/".join(rest[2:])
        elif not rest:
            rev, kind, sub = "main", "info", ""
        else:
            return self._error(404, None, "Not found")
        sha = repo.refs.get(rev, rev if rev in repo.commits else None)
        if sha is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        files = repo.commits[sha]
        if kind == "info":
            return self._json(200, {
                "_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
                "sha": sha, "private": repo.private, "gated": "manual" if repo.gated else False,
                "disabled": False, "siblings": [{"rfilename": p} for p in sorted(files)],
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            })
        self._tree(repo, sha, files, sub, query, raw_path)

    def _tree(self, repo: Repo, sha: str, files: dict, sub: str, query: dict, raw_path: str) -> None:
        recursive = query.get("recursive", "false").lower() == "true"
        prefix = f"{sub}/" if sub else ""
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}

        def listed(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

        def file_entry(p: str) -> dict:
            data = files[p]
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": p}
            if is_lfs(p, data):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            return entry

        if sub in files:  # the Hub lists a single file when the path is a file
            entries = [file_entry(sub)]
        elif sub and sub not in dirs:
            return self._error(404, "EntryNotFound", f"{sub} does not exist on \"{sha}\"", {"X-Repo-Commit": sha})
        else:
            entries = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                       for d in sorted(dirs) if listed(d)]
            entries += [file_entry(p) for p in sorted(files) if listed(p)]
        cursor = int(query.get("cursor", 0))
        page = entries[cursor:cursor + self.hub.tree_page_size]
        headers = {}
        if cursor + self.hub.tree_page_size < len(entries):
            rest = "&".join(f"{k}={quote(v)}" for k, v in query.items() if k != "cursor")
            nxt = f"{self.hub.url}{raw_path}?{rest}&cursor={cursor + self.hub.tree_page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(200, page, headers)

"""A stand-in for the Hugging Face Hub on 127.0.0.1: it answers HEAD and GET on
/datasets/REPO/resolve/REVISION/FILE (and /spaces/...) as the Hub does (ETag, X-Repo-Commit,
Content-Length, Range, the Hub's error codes), so that the real client runs against it.
It is a plain file server too (serve_plain): any other path, with Content-Length and
Range, as an HTTPS mirror or S3 answers."""
import hashlib
import http.server
import re
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROUTE = re.compile(r"^/(?P<kind>datasets|spaces)/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")


class FakeHub:
    """serve(repo, file, data) publishes a file in a dataset repo (serve("spaces/OWNER/NAME",
    ...) in a Space), serve_plain(path, data) at a plain path; cut_after=N closes every body
    after its first N bytes (a connection cut mid-file). `requests` lists (method, path,
    Range) of every request for a file; `headers` each one's headers."""

    def __init__(self):
        self.files, self.plain, self.requests, self.headers, self.cut_after = {}, {}, [], [], None
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body):
                if self.path.startswith("/api/"):  # the client's own calls (its agent registry)
                    return self.error(404, "EntryNotFound")
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                hub.headers.append(dict(self.headers))
                if self.path in hub.plain:
                    return self.send(hub.plain[self.path], body, hub_headers=False)
                match = ROUTE.match(self.path.split("?")[0])
                if not match:
                    return self.error(404, "RepoNotFound")
                repo, revision, name = match["repo"], match["revision"], match["file"]
                if match["kind"] == "spaces":
                    repo = f"spaces/{repo}"
                if not any(r == repo for r, _ in hub.files):
                    return self.error(404, "RepoNotFound")
                if revision not in ("main", COMMIT):
                    return self.error(404, "RevisionNotFound")
                data = hub.files.get((repo, name))
                if data is None:
                    return self.error(404, "EntryNotFound")
                self.send(data, body, hub_headers=True)

            def send(self, data, body, hub_headers):
                start = 0
                ranged = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if ranged:
                    start = int(ranged[1])
                self.send_response(206 if ranged else 200)
                if hub_headers:  # a file stored with Git LFS: its ETag is its SHA-256
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Repo-Commit", COMMIT)
                else:  # as S3 answers: an MD5 ETag, which says nothing of the SHA-256
                    self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if body:
                    end = len(data) if hub.cut_after is None else max(start, hub.cut_after)
                    self.wfile.write(data[start:end])
                    if end < len(data):
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)

            def error(self, status, code):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", f"{code} (fake hub)")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}"

    def serve(self, repo, name, data):
        self.files[(repo, name)] = data

    def serve_plain(self, path, data):
        self.plain[path] = data

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

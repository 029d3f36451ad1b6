#!/usr/bin/env python3
"""Reliability probes: what one client, or many idle or hostile ones, can make proxy-app and
nginx hold, and how both behave around a reload, an origin going away, a graceful stop, a
binary upgrade, a DNS outage and a moved upstream name, and more connections than they may
open files.

Both servers run side by side on loopback with equivalent configs (one worker or thread,
upstream keepalive, nginx's default client limits, which are also proxy-app's), pinned to
core 0; this program, the fake tailnet and the lifecycle origin run on core 1. Each probe
runs against fresh servers where it measures memory. Python 3 standard library only.

    probe.py --proxy-bin PATH --tailnet-bin PATH [--out RESULTS.md] [--command TEXT]
    probe.py --origin PORT [IP NAME]  # the lifecycle origin (a peer this program can kill),
                                      # or the DNS probe's second peer
"""

import argparse
import collections
import ctypes
import dataclasses
import datetime
import functools
import http.server
import os
import platform
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HOST = "app.test"
MAX_CONNECTIONS = 16384  # proxy-app `max_connections` and nginx `worker_connections`
BIG_HEAD_BYTES = 1 << 20
SLOWLORIS_INTERVAL = 5.0
DNS_TTL = 5  # the DNS probe's answers: proxy-app's min_ttl, so both servers ask every 5 s
FD_LIMIT = 1024  # the file-descriptor probe: the servers' open-files limit
FD_SLOW_CLIENTS = 1100  # ... and its slow connections, more than the limit
FD_HEADER_TIMEOUT = 5.0  # ... and both servers' client_header_timeout in it
FD_BELOW_LIMIT = 900  # ... max_connections / worker_connections below the limit
FD_ABOVE_LIMIT = 4096  # ... and above it (proxy-app's default max_connections)


@dataclasses.dataclass(frozen=True)
class Scale:
    """How many clients the probes open and how long they wait."""

    idle_connections: int = 10_000
    big_head_clients: int = 300
    slowloris_clients: int = 1000
    header_timeout: float = 60.0  # both servers' client_header_timeout (the default)
    keepalive_timeout: float = 75.0  # both servers' keepalive_timeout (the default)
    slowloris_window: float = 70.0
    idle_wait_cap: float = 90.0
    settle_after_close: float = 30.0
    dns_outage: float = 15.0  # DNS answers nothing this long (three TTLs)
    dns_follow_window: float = 15.0  # after the name moves, how long traffic may take to follow


# `--quick` checks the probes themselves in about 2 minutes, with short server timeouts.
QUICK = Scale(idle_connections=500, big_head_clients=20, slowloris_clients=20,
              header_timeout=5.0, keepalive_timeout=8.0, slowloris_window=10.0,
              idle_wait_cap=15.0, settle_after_close=3.0, dns_outage=7.0,
              dns_follow_window=10.0)
SCALE = Scale()

# --------------------------------------------------------------------------------------
# Processes and their memory
# --------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
SERVER_CORE, CLIENT_CORE = 0, 1
TWO_CORES = (os.cpu_count() or 1) >= 2


def die_with_parent():
    """preexec_fn: the child gets SIGTERM when the thread that started it ends (so every
    process is started from the main thread)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class PidProc:
    """A server process this program did not start as its child (nginx's master when it
    must be able to change its binary, and the master that change starts), with the part of
    `subprocess.Popen` the probes use, read from /proc. Nothing reaps it here: a zombie
    counts as exited."""

    def __init__(self, pid):
        self.pid = pid

    def poll(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return 0
        return 0 if state in ("Z", "X") else None

    def send_signal(self, sig):
        try:
            os.kill(self.pid, sig)
        except OSError:
            pass

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return 0


def children(pid):
    """Direct children of a process (nginx's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def status_kib(pids, field):
    """The sum of one kB field of /proc/PID/status (VmRSS, VmHWM) over the processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def reset_peak(pids):
    """Resets VmHWM to the current RSS (`clear_refs` 5), so a probe reads its own peak."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def raise_open_files_limit(wanted=65536):
    """Raises RLIMIT_NOFILE (the servers inherit it): to `wanted`, else to the hard limit."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_files_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mib(kib):
    return kib / 1024


def free_port():
    """A port free now (bound and released: acceptable in a bench script)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(argv):
    return ["taskset", "-c", str(SERVER_CORE)] + argv if TWO_CORES else argv


def spawn(argv, log_path, pinned=True, env=None, nofile=None):
    """Starts a process (on the server core when `pinned`), its output to `log_path`;
    `nofile`: its open-files limit (soft and hard), the probe's own staying as it is."""
    if pinned:
        argv = pin(argv)

    def preexec():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        die_with_parent()

    log = open(log_path, "ab")
    return subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            preexec_fn=preexec, env=env)


def spawn_orphan(argv, log_path, nofile=None):
    """Starts a process through a shell that waits 1 s, then exits, so the process is no
    longer the child of the one that started it (as nginx's `daemon on` does, without a
    session of its own: it stays in the run's process group). nginx changes its binary on
    USR2 only then: a master whose parent is still the one it started under takes itself
    for the new binary of a running upgrade and ignores the signal."""
    limit = f"ulimit -n {nofile}; " if nofile else ""
    command = " ".join(shlex.quote(a) for a in pin(argv))
    shell = subprocess.Popen(
        ["sh", "-c", f"{limit}{command} </dev/null >>{shlex.quote(log_path)} 2>&1 & "
                     "echo $!; sleep 1"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=die_with_parent)
    pid = int(shell.stdout.readline())
    shell.wait()
    return PidProc(pid)


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


# --------------------------------------------------------------------------------------
# HTTP on raw sockets
# --------------------------------------------------------------------------------------

Response = collections.namedtuple("Response", "status headers body")


def connect(port, timeout=10.0, ip="127.0.0.1"):
    s = socket.create_connection((ip, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def get(path, host=HOST, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


class HttpReader:
    """Reads HTTP/1.1 responses from a socket, keeping bytes past one response for the
    next (pipelining). Raises EOFError when the peer closes before a whole response."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.received = 0

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed")
        self.received += len(data)
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            self._fill()

    def read_response(self, head_only_body=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head = self._take(self.buf.find(b"\r\n\r\n") + 4).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if head_only_body or status < 200 or status in (204, 304):
            return Response(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", ""):
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                body += self._take(size)
                self._take(2)
                if size == 0:
                    break
            return Response(status, headers, bytes(body))
        if "content-length" in headers:
            return Response(status, headers, self._take(int(headers["content-length"])))
        while True:  # delimited by the close
            try:
                self._fill()
            except EOFError:
                body = bytes(self.buf)
                self.buf.clear()
                return Response(status, headers, body)


def fetch(port, path="/", host=HOST, timeout=5.0, ip="127.0.0.1"):
    """One GET on a new connection; the response, or None on any error."""
    try:
        with connect(port, timeout, ip) as s:
            s.sendall(get(path, host, "Connection: close\r\n"))
            return HttpReader(s).read_response()
    except (OSError, EOFError, ValueError, IndexError):
        return None


def fetch_outcome(port, timeout):
    """One GET on a new connection, within `timeout` s: `200`, another status, or how it
    failed."""
    try:
        with connect(port, timeout) as s:
            s.sendall(get("/", HOST, "Connection: close\r\n"))
            return str(HttpReader(s).read_response().status)
    except socket.timeout:
        return f"no answer within {timeout:.0f} s"
    except EOFError:
        return "closed without an answer"
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except (OSError, ValueError, IndexError) as e:
        return type(e).__name__


def wait_closed(sock, cap):
    """Waits until the peer closes `sock` (EOF or reset), at most `cap` seconds.
    Returns (seconds, bytes the server sent meanwhile), seconds None if still open."""
    start = time.monotonic()
    got = b""
    while True:
        left = cap - (time.monotonic() - start)
        if left <= 0:
            return None, got
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None, got
        except OSError:
            return time.monotonic() - start, got
        if not data:
            return time.monotonic() - start, got
        got += data


def first_line(data):
    return data.split(b"\r\n", 1)[0].decode("latin-1") if data else "nothing"


# --------------------------------------------------------------------------------------
# The servers under test
# --------------------------------------------------------------------------------------

RELOADED_BODY = "reloaded\n"


def marker_body(marker):
    """The body of the `= /MARKER` location a rewritten config adds (`reloaded`, `upgraded`)."""
    return f"{marker}\n"


def proxy_config(port, admin, dns, upstream, marker=None, header_timeout=None,
                 connections=MAX_CONNECTIONS, upgrade_sock=None):
    """proxy-app's config: one thread, the client limits at their defaults (nginx's),
    upstream keepalive (the default pool of 128), no access log. `marker` adds a location
    `= /MARKER` answering `MARKER`; the other arguments are the probes' own limits."""
    extra = ""
    if marker:
        extra = (f'[[sites.app.locations]]\nmatch = "= /{marker}"\n'
                 f'return = {{ status = 200, body = "{marker}\\n" }}\n\n')
    upgrade = f'upgrade_sock = "{upgrade_sock}"\n' if upgrade_sock else ""
    return (
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nthreads = 1\n'
        f'client_header_timeout = "{header_timeout or SCALE.header_timeout:.0f}s"\n'
        f'keepalive_timeout = "{SCALE.keepalive_timeout:.0f}s"\n'
        f"max_connections = {connections}\n{upgrade}\n"
        f'[admin]\nlisten = "127.0.0.1:{admin}"\n\n'
        f"[access_log]\nenabled = false\n\n"
        f'[resolver]\nnameservers = ["{dns}"]\n\n'
        f'[upstreams.app]\naddress = "{upstream}"\n\n'
        f'[sites.app]\nhosts = ["{HOST}"]\n\n'
        f'{extra}[[sites.app.locations]]\nmatch = "/"\nproxy = "app"\n'
    )


def nginx_config(port, d, upstream_addr, upstream_host, marker=None, header_timeout=None,
                 connections=MAX_CONNECTIONS, nofile=None, resolver=None):
    """nginx's equivalent: one worker, enough file descriptors, upstream keepalive 128,
    the headers proxy-app adds, its response head limit (8k), the same listen backlog
    (Pingora's 65535, capped by somaxconn), default client limits, no access log.
    With `resolver` (the DNS probe), `upstream_addr` is `name:port`, looked up through that
    DNS server as its TTL says (`resolver` + a variable `proxy_pass`; there is no upstream
    block, so no upstream keepalive)."""
    extra = f'location = /{marker} {{ return 200 "{marker}\\n"; }}' if marker else ""
    forwarding = ("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
                  "proxy_set_header X-Real-IP $remote_addr; "
                  "proxy_set_header X-Forwarded-Proto $scheme; "
                  "proxy_set_header X-Request-Id $request_id; "
                  "add_header X-Request-Id $request_id always;")
    if resolver:
        upstream = f" resolver {resolver} ipv6=off; resolver_timeout 2s;\n"
        target = f'set $peer "{upstream_addr}"; proxy_pass http://$peer;'
    else:
        upstream = f" upstream app {{ server {upstream_addr}; keepalive 128; }}\n"
        target = "proxy_pass http://app;"
    return (
        f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
        f"worker_rlimit_nofile {nofile or open_files_limit()};\n"
        f"events {{ worker_connections {connections}; }}\n"
        f"http {{\n access_log off;\n"
        f" client_header_timeout {header_timeout or SCALE.header_timeout:.0f}s;"
        f" keepalive_timeout {SCALE.keepalive_timeout:.0f}s;\n"
        f" client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;"
        f" uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n"
        f"{upstream}"
        f" server {{ listen 127.0.0.1:{port} default_server backlog=4096; return 444; }}\n"
        f" server {{ listen 127.0.0.1:{port}; server_name {HOST};\n"
        f"  location / {{ {target} proxy_http_version 1.1;"
        f' proxy_set_header Connection ""; proxy_set_header Host {upstream_host};'
        f" proxy_buffer_size 8k; {forwarding} }}\n  {extra}\n }}\n}}\n"
    )


class Server:
    """One server under test: proxy-app or nginx (master + worker), on a free port."""

    def __init__(self, kind, port, proc, conf_path, write_conf, admin=None, log=None):
        self.kind, self.port, self.proc = kind, port, proc
        self.conf_path, self.write_conf, self.admin = conf_path, write_conf, admin
        self.log = log  # proxy-app's output, nginx's error log
        self.argv, self.env, self.upgrade_sock, self.pid_file = None, None, None, None

    def pids(self):
        if self.proc.poll() is not None:
            return []
        return [self.proc.pid] + children(self.proc.pid)

    def rss(self):
        return status_kib(self.pids(), "VmRSS")

    def peak(self):
        return status_kib(self.pids(), "VmHWM")

    def reset_peak(self):
        reset_peak(self.pids())

    def reload(self, marker):
        """Rewrites the config (adding `= /MARKER`) and reloads: SIGHUP for proxy-app,
        `nginx -s reload`."""
        self.write_conf(marker)
        if self.kind == "proxy-app":
            os.kill(self.proc.pid, signal.SIGHUP)
        else:
            subprocess.run(["nginx", "-c", self.conf_path, "-s", "reload"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_gracefully(self):
        """SIGTERM for proxy-app, SIGQUIT for nginx."""
        os.kill(self.proc.pid, signal.SIGTERM if self.kind == "proxy-app" else signal.SIGQUIT)

    def close_reasons(self):
        """proxy-app's edge_client_closes_total by reason, from its admin listener."""
        return self.metric("edge_client_closes_total", "reason")

    def metric(self, name, label):
        """One of proxy-app's counters or gauges by `label`, from its admin listener."""
        if self.admin is None:
            return {}
        res = fetch(self.admin, "/metrics", "127.0.0.1")
        if res is None:
            return {}
        out = {}
        for line in res.body.decode().splitlines():
            if line.startswith(name + "{") and f'{label}="' in line:
                key = line.split(f'{label}="', 1)[1].split('"', 1)[0]
                out[key] = int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith(name + " "):
                out[""] = int(float(line.rsplit(" ", 1)[1]))
        return out

    def log_count(self, text):
        """Lines of the server's log (proxy-app's output, nginx's error log) holding `text`."""
        try:
            with open(self.log, errors="replace") as f:
                return sum(text in line for line in f)
        except (OSError, TypeError):
            return 0

    def open_fds(self):
        """The most file descriptors one of its processes holds (nginx: the worker)."""
        return max((open_fds(pid) for pid in self.pids()), default=0)

    def kill(self):
        """Stops the server now: nginx through SIGTERM (its master reaps its worker), then
        SIGKILL for whatever is left."""
        kids = children(self.proc.pid)
        if self.kind != "proxy-app" and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for pid in kids:  # a worker outlives a killed master
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class Lab:
    """Owns every process and the temporary directory; `close` ends them all."""

    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="edge-reliability-")
        os.chmod(self.dir, 0o755)  # nginx's worker may run as nobody
        self.servers = []
        self.others = []
        self.tailnet = None

    def start_tailnet(self, ttl=None):
        """A fake tailnet with one peer, `app`; the first one started is `self.tailnet`, the
        upstream of every pair unless told otherwise. `ttl`: its DNS answers' TTL."""
        argv = [self.args.tailnet_bin, "--dns", "127.100.100.100:0", "--peer", "app"]
        if ttl is not None:
            argv += ["--ttl", str(ttl)]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, "tailnet.log"), "ab"),
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, text=True)
        self.others.append(proc)
        info = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("fake-tailnet exited before `ready`")
            key, _, value = line.strip().partition(" ")
            if key == "ready":
                break
            info.setdefault(key, value)
        dns, http_port = info["dns"], int(info["http_port"])
        _, fqdn, ip = info["peer"].split()
        tailnet = {"dns": dns, "fqdn": fqdn, "ip": ip, "http_port": http_port,
                   "addr": f"{ip}:{http_port}", "proxy_upstream": f"{fqdn}:{http_port}"}
        if self.tailnet is None:
            self.tailnet = tailnet
        return tailnet

    def start_pair(self, tag, upstream=None, **limits):
        """proxy-app and nginx in front of `upstream` (default: the fake tailnet's peer);
        `upstream` is an `ip:port` both use directly. `limits`: `header_timeout`,
        `connections` and `nofile` for both."""
        t = self.tailnet
        up_proxy = upstream or t["proxy_upstream"]
        up_addr = upstream or t["addr"]
        up_host = (upstream or t["fqdn"]).split(":")[0]
        return [self._start_proxy(tag, up_proxy, **limits),
                self._start_nginx(tag, up_addr, up_host, **limits)]

    def _start_proxy(self, tag, upstream, dns=None, header_timeout=None,
                     connections=MAX_CONNECTIONS, nofile=None, upgradable=False):
        """proxy-app; `dns`: its nameserver (default the fake tailnet's), `upgradable`: with
        an `upgrade_sock` (and info logs, which say how the handover went)."""
        port, admin = free_port(), free_port()
        conf = os.path.join(self.dir, f"{tag}-proxy.toml")
        sock = os.path.join(self.dir, f"{tag}-upgrade.sock") if upgradable else None

        def write(marker=None):
            with open(conf, "w") as f:
                f.write(proxy_config(port, admin, dns or self.tailnet["dns"], upstream, marker,
                                     header_timeout, connections, sock))

        write()
        env = dict(os.environ, RUST_LOG="info" if upgradable else "warn")
        log = os.path.join(self.dir, f"{tag}-proxy.log")
        argv = [self.args.proxy_bin, "run", "--config", conf]
        proc = spawn(argv, log, env=env, nofile=nofile)
        server = Server("proxy-app", port, proc, conf, write, admin, log)
        server.argv, server.env, server.upgrade_sock = argv, env, sock
        self.servers.append(server)
        return self._ready(server)

    def _start_nginx(self, tag, upstream_addr, upstream_host, header_timeout=None,
                     connections=MAX_CONNECTIONS, nofile=None, resolver=None, upgradable=False,
                     kind="nginx"):
        """nginx; `resolver`: look the upstream name up through this DNS server (see
        `nginx_config`); `upgradable`: started so that it can change its binary on USR2
        (see `spawn_orphan`), by its full path, which the new binary is run from."""
        port = free_port()
        d = os.path.join(self.dir, f"{tag}-{kind}")
        os.makedirs(d)
        os.chmod(d, 0o755)
        conf = os.path.join(d, "nginx.conf")

        def write(marker=None):
            with open(conf, "w") as f:
                f.write(nginx_config(port, d, upstream_addr, upstream_host, marker,
                                     header_timeout, connections, nofile, resolver))

        write()
        argv = [shutil.which("nginx") or "nginx", "-c", conf, "-g", "daemon off;"]
        if upgradable:
            proc = spawn_orphan(argv, os.path.join(d, "stderr.log"), nofile=nofile)
        else:
            proc = spawn(argv, os.path.join(d, "stderr.log"), nofile=nofile)
        server = Server(kind, port, proc, conf, write, log=os.path.join(d, "error.log"))
        server.pid_file = os.path.join(d, "nginx.pid")
        self.servers.append(server)
        return self._ready(server)

    def _ready(self, server, limit=20.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.kind} exited at start (logs in {self.dir})")
            res = fetch(server.port, "/")
            if res is not None and res.status == 200:
                for _ in range(20):  # warm up: the upstream connection, first allocations
                    fetch(server.port, "/")
                time.sleep(0.5)
                return server
            time.sleep(0.1)
        raise RuntimeError(f"{server.kind} never answered 200 (logs in {self.dir})")

    def stop(self, servers):
        for s in servers:
            s.kill()
            self.servers.remove(s)

    def close(self, keep_dir=False):
        for s in self.servers:
            s.kill()
        for p in self.others:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Probes: each takes one server and returns a dict of what it saw
# --------------------------------------------------------------------------------------


def probe_big_heads(server, line_size):
    """300 connections each sending a ~1 MiB request head that never ends (no blank line),
    in header lines of `line_size` bytes, all at once. Counts answers and closes within the
    limits (the size limit, else client_header_timeout + 5 s); RSS before, peak, 3 s after."""
    head = get("/big", extra="").rstrip(b"\r\n") + b"\r\n"
    line = b"X-Big: " + b"a" * (line_size - 9) + b"\r\n"
    payload = memoryview(head + line * (BIG_HEAD_BYTES // line_size))
    before = server.rss()
    server.reset_peak()
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(SCALE.big_head_clients):
        s = connect(server.port)
        s.setblocking(False)
        c = {"sock": s, "sent": 0, "got": b"", "closed": None, "how": None}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    start = time.monotonic()
    deadline = start + SCALE.header_timeout + 5
    sampled_peak, open_count = before, len(conns)
    last_sample = 0.0
    while open_count and time.monotonic() < deadline:
        for key, events in sel.select(0.05):
            c = key.data
            if events & selectors.EVENT_WRITE and c["sent"] < len(payload):
                try:
                    c["sent"] += c["sock"].send(payload[c["sent"]:c["sent"] + 65536])
                except BlockingIOError:
                    pass
                except OSError:
                    c["how"] = "reset while sending"
                if c["sent"] >= len(payload) or c["how"]:
                    sel.modify(c["sock"], selectors.EVENT_READ, c)
            if events & selectors.EVENT_READ or c["how"]:
                try:
                    data = c["sock"].recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data, c["how"] = b"", c["how"] or "reset"
                if data:
                    c["got"] += data
                elif data == b"":
                    c["how"] = c["how"] or "closed (EOF)"
                    c["closed"] = time.monotonic() - start
                    sel.unregister(c["sock"])
                    open_count -= 1
        if time.monotonic() - last_sample > 0.05:
            sampled_peak, last_sample = max(sampled_peak, server.rss()), time.monotonic()
    peak = max(server.peak(), sampled_peak)
    for c in conns:
        c["sock"].close()
    sel.close()
    time.sleep(3)
    after = server.rss()
    answers = collections.Counter(first_line(c["got"]) for c in conns)
    closed = [c for c in conns if c["closed"] is not None]
    return {
        "clients": len(conns),
        "closed": len(closed),
        "answers": dict(answers),
        "how": dict(collections.Counter(c["how"] or "still open" for c in conns)),
        "sent_kib_median": statistics.median(c["sent"] for c in conns) / 1024,
        "sent_kib_max": max(c["sent"] for c in conns) / 1024,
        "last_close_s": max((c["closed"] for c in closed), default=None),
        "rss_before": before, "rss_peak": peak, "rss_after": after,
        "reasons": server.close_reasons(),
    }


def ready_reads(sel, timeout):
    """The selector's readable clients within `timeout` s, each with what it read: bytes, or
    b"" when the server closed (or reset) the connection. Spurious wake-ups are skipped."""
    for key, _ in sel.select(timeout):
        try:
            data = key.data["sock"].recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        yield key.data, data


def probe_slowloris(server):
    """1000 connections sending one byte of a request head every 5 s (never finishing it);
    how many the server closes within 70 s of their start, and when."""
    text = get("/slow", extra="X-Slow: " + "a" * 64 + "\r\n")
    socks, start = [], time.monotonic()
    for _ in range(SCALE.slowloris_clients):
        s = connect(server.port)
        s.send(text[:1])
        s.setblocking(False)
        socks.append({"sock": s, "sent": 1, "start": time.monotonic(), "closed": None,
                      "got": b""})
    sel = selectors.DefaultSelector()
    for c in socks:
        sel.register(c["sock"], selectors.EVENT_READ, c)
    next_byte, end = start + SLOWLORIS_INTERVAL, start + SCALE.slowloris_window
    open_count = len(socks)
    while open_count and time.monotonic() < end:
        now = time.monotonic()
        if now >= next_byte:
            for c in socks:
                if c["closed"] is None:
                    try:
                        c["sock"].send(text[c["sent"]:c["sent"] + 1])
                        c["sent"] += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        c["closed"] = now - c["start"]
                        sel.unregister(c["sock"])
                        open_count -= 1
            next_byte += SLOWLORIS_INTERVAL
        for c, data in ready_reads(sel, max(0.0, min(next_byte, end) - time.monotonic())):
            if data:
                c["got"] += data
                continue
            c["closed"] = time.monotonic() - c["start"]
            sel.unregister(c["sock"])
            open_count -= 1
    sel.close()
    for c in socks:
        c["sock"].close()
    times = sorted(c["closed"] for c in socks if c["closed"] is not None)
    return {
        "clients": len(socks),
        "closed": len(times),
        "first_s": times[0] if times else None,
        "median_s": statistics.median(times) if times else None,
        "last_s": times[-1] if times else None,
        "bytes_sent_max": max(c["sent"] for c in socks),
        "answers": dict(collections.Counter(first_line(c["got"]) for c in socks)),
    }


def probe_idle_keepalive(server, partial):
    """One request on a keep-alive connection, then nothing (or, when `partial`, the start
    of a second request head); when the server closes it, capped at 90 s."""
    with connect(server.port) as s:
        s.sendall(get("/"))
        first = HttpReader(s).read_response()
        sent = b""
        if partial:
            sent = get("/second").rstrip(b"\r\n") + b"\r\n"  # no blank line: unfinished
            s.sendall(sent)
        closed_after, got = wait_closed(s, SCALE.idle_wait_cap)
    return {"first": first.status, "closed_after_s": closed_after, "answer": first_line(got),
            "sent": sent.decode()}


def probe_idle_connections(server):
    """Opens 10,000 keep-alive connections with one request each and leaves them idle.
    Returns the sockets (to close later) and the RSS before and with them.

    "Idle" is the process after a warm-up of 100 requests, each on its own connection: what
    the first requests build once (the upstream connection and its pool, lazily made state,
    the allocator's per-thread heaps) is part of a serving process, not of the connections
    measured. The RSS before any request is reported beside it."""
    cold = server.rss()
    for i in range(100):
        fetch(server.port, f"/warm/{i}")
    time.sleep(1)
    idle = server.rss()
    socks, ok, start = [], 0, time.monotonic()
    for i in range(SCALE.idle_connections):
        if time.monotonic() - start > 120:
            break
        s = None
        try:
            s = connect(server.port)
            s.sendall(get(f"/idle/{i}"))
            if HttpReader(s).read_response().status == 200:
                ok += 1
            socks.append(s)
        except (OSError, EOFError, ValueError):
            if s is not None:
                s.close()
    opened_s = time.monotonic() - start
    time.sleep(2)
    return socks, {"cold": cold, "idle": idle, "with": server.rss(), "answered": ok, "open": len(socks),
                   "open_s": opened_s}


def close_idle_connections(server, socks, m):
    for s in socks:
        s.close()
    m["closed_at"] = time.monotonic()


def numbered(i, query=""):
    """A target the peer answers with an `X-I: i` header, to check the answers' order."""
    return f"/n/{i}?header=X-I:{i}{query}"


def probe_pipelined(server, count):
    """`count` GETs in one write; how many answers come back, and whether in order."""
    with connect(server.port, timeout=10) as s:
        s.sendall(b"".join(get(numbered(i)) for i in range(count)))
        reader, order = HttpReader(s), []
        try:
            for _ in range(count):
                res = reader.read_response()
                order.append(answer_index(res) if res.status == 200 else f"status {res.status}")
        except (OSError, EOFError) as e:
            order.append(f"then {type(e).__name__}")
    answered = [o for o in order if isinstance(o, int)]
    return {"sent": count, "answered": len(answered),
            "in_order": answered == list(range(len(answered))),
            "tail": order[len(answered):]}


def answer_index(res):
    """The `i` of the [`numbered`] target this answers."""
    return int(res.headers.get("x-i", "-1"))


def probe_second_in_flight(server):
    """A GET the origin answers after 300 ms, and a second GET on the same connection
    100 ms later, while the first is in flight: are both answered, in order?"""
    with connect(server.port, timeout=10) as s:
        start = time.monotonic()
        s.sendall(get(numbered(0, "&delay_ms=300")))
        time.sleep(0.1)
        s.sendall(get(numbered(1)))
        reader, seen = HttpReader(s), []
        try:
            for _ in range(2):
                res = reader.read_response()
                seen.append((res.status, answer_index(res) if res.status == 200 else None,
                             round((time.monotonic() - start) * 1000)))
        except (OSError, EOFError) as e:
            seen.append((type(e).__name__, None, round((time.monotonic() - start) * 1000)))
    return {"answers": seen}


def probe_big_response_head(server):
    """The origin answers with a 100 KiB response head (one 100 KiB header): the status
    the client gets."""
    res = fetch(server.port, f"/?header_size={100 * 1024}", timeout=10)
    if res is None:
        return {"status": "no answer"}
    return {"status": res.status, "body_bytes": len(res.body)}


# --------------------------------------------------------------------------------------
# Lifecycle: reload, origin killed and back, graceful stop, under a steady request loop
# --------------------------------------------------------------------------------------


class OriginHandler(http.server.BaseHTTPRequestHandler):
    """The lifecycle origin: `hello from origin`, after `?delay_ms=`, keep-alive (the DNS
    probe's second peer: `hello from NAME`)."""

    protocol_version = "HTTP/1.1"
    name = "origin"

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        delay = int(query.get("delay_ms", ["0"])[0])
        if delay:
            time.sleep(delay / 1000)
        body = f"hello from {self.name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_origin(port, ip="127.0.0.1", name="origin"):
    OriginHandler.name = name
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer((ip, port), OriginHandler).serve_forever()


Attempt = collections.namedtuple("Attempt", "start end outcome reused connection body")


class RequestLoop:
    """Clients sending GETs (by default the origin holds each 100 ms), at most one per
    100 ms each, on keep-alive connections (with `fresh`, each on a new connection with
    `Connection: close`), until told to stop or `limit` s; each request is an `Attempt`
    (`connection`: the answer's Connection header; `body`: a 200's body)."""

    WORKERS = 4
    PATH = "/?delay_ms=100"
    PERIOD = 0.1

    def __init__(self, server, workers=WORKERS, path=PATH, fresh=False, limit=60.0):
        self.server, self.path, self.fresh, self.limit = server, path, fresh, limit
        self.attempts = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._work, daemon=True)
                        for _ in range(workers)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _work(self):
        sock, reader, started = None, None, time.monotonic()
        request = get(self.path, extra="Connection: close\r\n" if self.fresh else "")
        while not self.stop.is_set() and time.monotonic() - started < self.limit:
            t, reused, connection, body = time.monotonic(), sock is not None, None, None
            try:
                if sock is None:
                    sock = connect(self.server.port, timeout=5)
                    reader = HttpReader(sock)
                sock.sendall(request)
                res = reader.read_response()
                outcome = "ok" if res.status == 200 else f"status {res.status}"
                if res.status == 200:
                    body = res.body.decode("latin-1").strip()
                connection = res.headers.get("connection", "none").lower()
                if connection == "close" or self.fresh:
                    sock.close()
                    sock = None
            except ConnectionRefusedError:
                outcome, sock = "refused", None
            except (OSError, EOFError, ValueError) as e:
                kind = "closed before an answer" if isinstance(e, EOFError) else type(e).__name__
                outcome = f"{kind} on a {'reused' if reused else 'new'} connection"
                if sock is not None:
                    sock.close()
                sock = None
            self.attempts.append(Attempt(t, time.monotonic(), outcome, reused, connection, body))
            time.sleep(max(0.0, t + self.PERIOD - time.monotonic()))
        if sock is not None:
            sock.close()

    def ended(self, since, until):
        """The attempts that ended in [since, until)."""
        return [a for a in self.attempts if since <= a.end < until]


def start_clock(loops):
    """Starts the request loops; returns their start time and `at(offset)`, which sleeps
    until `offset` s after it and returns the time then (for a probe's timed events)."""
    t0 = time.monotonic()
    for loop in loops:
        loop.start()

    def at(offset):
        time.sleep(max(0.0, t0 + offset - time.monotonic()))
        return time.monotonic()

    return t0, at


def probe_lifecycle(lab, log):
    """Both servers in front of one origin (a process this program kills and restarts on
    the same port), under request loops at once: reload at 2 s, origin killed at 6 s and
    restarted 2 s later, graceful stop at 12 s; loops end 4 s later or at 60 s. Each
    request counts in the phase in which it ended."""
    origin_port = free_port()
    origin_log = os.path.join(lab.dir, "origin.log")

    def start_origin():
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--origin",
                                 str(origin_port)], stdout=open(origin_log, "ab"),
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        lab.others.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if fetch(origin_port, "/", "origin") is not None:
                return proc
            time.sleep(0.05)
        raise RuntimeError("the lifecycle origin did not start")

    origin = start_origin()
    servers = lab.start_pair("lifecycle", f"127.0.0.1:{origin_port}")
    loops = [RequestLoop(s) for s in servers]
    t0, at = start_clock(loops)
    events = {}

    events["reload"] = at(2)
    for s in servers:
        s.reload("reloaded")
    at(4)
    reloaded = {s.kind: getattr(fetch(s.port, "/reloaded"), "body", b"").decode() == RELOADED_BODY
                for s in servers}
    events["kill"] = at(6)
    origin.kill()
    origin.wait()
    at(8)
    start_origin()
    events["back"] = time.monotonic()
    events["stop"] = at(12)
    for s in servers:
        s.stop_gracefully()
    exit_after = {}
    while time.monotonic() < events["stop"] + 4:
        for s in servers:
            if s.kind not in exit_after and s.proc.poll() is not None:
                exit_after[s.kind] = time.monotonic() - events["stop"]
        time.sleep(0.05)
    for loop in loops:
        loop.finish()
    results = {}
    for s, loop in zip(servers, loops):
        after_stop = loop.ended(events["stop"], float("inf"))
        phases = {
            "reload": loop.ended(t0, events["kill"]),
            "down": loop.ended(events["kill"], events["back"]),
            "back": loop.ended(events["back"], events["stop"]),
            "in_flight_at_stop": [a for a in after_stop if a.start < events["stop"]],
            "sent_after_stop": [a for a in after_stop if a.start >= events["stop"]],
        }
        first_ok_after_back = next((a.end - events["back"] for a in phases["back"]
                                    if a.outcome == "ok"), None)
        results[s.kind] = {
            "phases": {k: summarize(v) for k, v in phases.items()},
            "reload_applied": reloaded[s.kind],
            "first_ok_after_back_s": first_ok_after_back,
            "exit_after_s": exit_after.get(s.kind),
        }
        log(f"lifecycle {s.kind}: {results[s.kind]}")
        marks = ", ".join(f"{k} at {v - t0:.3f} s" for k, v in events.items())
        for a in loop.attempts:  # the evidence for every unexpected failure
            expected = a.outcome == "refused" or (
                a.outcome == "status 502" and events["kill"] <= a.end < events["back"])
            if a.outcome != "ok" and not expected:
                log(f"  {s.kind}: sent {a.start - t0:.3f} s, ended {a.end - t0:.3f} s: "
                    f"{a.outcome} ({marks})")
    lab.stop(servers)
    return results


def summarize(attempts):
    outcomes = collections.Counter(a.outcome for a in attempts)
    connection = collections.Counter(a.connection for a in attempts if a.connection)
    return {"total": len(attempts), "ok": outcomes.get("ok", 0), "outcomes": dict(outcomes),
            "connection": dict(connection)}


# --------------------------------------------------------------------------------------
# Binary upgrade under load
# --------------------------------------------------------------------------------------


def begin_upgrade(lab, server):
    """Rewrites the config (adding `= /upgraded`, which only the new process serves) and
    starts the new process: proxy-app `run --upgrade`, returned once it waits on the upgrade
    socket; nginx USR2, returned once the new master wrote its pid. Returns the new process
    as a `Server` the lab stops at the end, or None if none started within 10 s."""
    server.write_conf("upgraded")
    deadline = time.monotonic() + 10
    if server.kind == "proxy-app":
        proc = spawn(server.argv + ["--upgrade"], server.log, env=server.env)
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(server.upgrade_sock):
                break
            time.sleep(0.01)
    else:
        old, proc = server.proc.pid, None
        server.proc.send_signal(signal.SIGUSR2)
        while time.monotonic() < deadline and proc is None:
            try:
                with open(server.pid_file) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != old:
                proc = PidProc(pid)
            time.sleep(0.01)
        if proc is None:
            return None
    new = Server(server.kind, server.port, proc, server.conf_path, server.write_conf,
                 server.admin, server.log)
    lab.servers.append(new)
    return new


def probe_upgrade(lab, log):
    """Both servers in front of the fake tailnet's peer under request loops (4 keep-alive
    clients and 2 opening a connection per request, 100 ms requests, at most 10/s each):
    the new process is started at 2 s (proxy-app `run --upgrade`, nginx USR2), the old one
    gets SIGQUIT at 3 s; the loops end 2 s after the old one exits (at most 20 s after the
    signal). A request counts in the phase in which it ended: before the new process
    started, during the handover (until the old process exited), after it."""
    t = lab.tailnet
    servers = [lab._start_proxy("upgrade", t["proxy_upstream"], upgradable=True),
               lab._start_nginx("upgrade", t["addr"], t["fqdn"], upgradable=True)]
    loops = {s.kind: {"keep-alive": RequestLoop(s), "fresh": RequestLoop(s, workers=2, fresh=True)}
             for s in servers}
    t0, at = start_clock([loop for pair in loops.values() for loop in pair.values()])
    events = {s.kind: {} for s in servers}

    at(2)
    new = {}
    for s in servers:
        events[s.kind]["begin"] = time.monotonic()
        new[s.kind] = begin_upgrade(lab, s)
        events[s.kind]["ready"] = time.monotonic()
    at(3)
    for s in servers:
        events[s.kind]["signal"] = time.monotonic()
        s.proc.send_signal(signal.SIGQUIT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any("exit" not in events[s.kind] for s in servers):
        for s in servers:
            if "exit" not in events[s.kind] and s.proc.poll() is not None:
                events[s.kind]["exit"] = time.monotonic()
        time.sleep(0.02)
    end = time.monotonic() + 2
    time.sleep(2)
    for pair in loops.values():
        for loop in pair.values():
            loop.finish()
    results = {}
    for s in servers:
        e, n = events[s.kind], new[s.kind]
        upgraded = n is not None and getattr(fetch(s.port, "/upgraded"), "body", b"").decode() \
            == marker_body("upgraded")
        handover_end = e.get("exit", end)
        r = {"new_ready_s": e["ready"] - e["begin"] if n else None,
             "exit_after_s": e["exit"] - e["signal"] if "exit" in e else None,
             "new_alive": n is not None and n.proc.poll() is None,
             "upgraded": upgraded, "clients": {}}
        for name, loop in loops[s.kind].items():
            r["clients"][name] = {
                "before": summarize(loop.ended(t0, e["begin"])),
                "handover": summarize(loop.ended(e["begin"], handover_end)),
                "after": summarize(loop.ended(handover_end, float("inf"))),
            }
        if s.kind == "proxy-app":
            r["log"] = {"sockets sent": s.log_count("listener sockets sent"),
                        "send failed": s.log_count("Unable to send listener sockets")}
        else:
            r["log"] = {"USR2 ignored": s.log_count("changing binary signal is ignored")}
        results[s.kind] = r
        log(f"upgrade {s.kind}: {r}")
        marks = ", ".join(f"{k} at {v - t0:.3f} s" for k, v in e.items())
        for name, loop in loops[s.kind].items():
            for a in loop.attempts:
                if a.outcome != "ok":
                    log(f"  {s.kind} {name}: sent {a.start - t0:.3f} s, ended {a.end - t0:.3f} s: "
                        f"{a.outcome} ({marks})")
    lab.stop([x for x in lab.servers if x.port in {s.port for s in servers}])
    return results


# --------------------------------------------------------------------------------------
# DNS outage and a moved name under load
# --------------------------------------------------------------------------------------


def dns_question(msg):
    """(name, qtype, end of the question) of a DNS query."""
    i, labels = 12, []
    while msg[i]:
        labels.append(msg[i + 1:i + 1 + msg[i]].decode("latin-1").lower())
        i += 1 + msg[i]
    qtype = struct.unpack("!H", msg[i + 1:i + 3])[0]
    return ".".join(labels), qtype, i + 5


def dns_answer_a(query, end, ip, ttl):
    """An authoritative answer to an A query: `ip`, with `ttl`."""
    flags = 0x8400 | 0x0080 | (struct.unpack("!H", query[2:4])[0] & 0x0100)
    header = query[:2] + struct.pack("!HHHHH", flags, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)
    return header + query[12:end] + record


class DnsRelay:
    """A UDP relay in front of the fake MagicDNS, which has no run-time control of its own
    when run as a program: passes every query on (`pass`), drops every one (`down`, as
    MagicDNS down: the resolver times out), or answers the A query for `name` with `moved_ip`
    itself (`moved`), passing the rest on. Counts the queries it got in each mode."""

    def __init__(self, upstream, name):
        host, port = upstream.rsplit(":", 1)
        self.name, self.mode, self.moved_ip = name, "pass", None
        self.queries = collections.Counter()
        self.seen = []  # (when, mode, qtype) of every query
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.connect((host, int(port)))
        self.up.settimeout(1.0)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                query, client = self.sock.recvfrom(4096)
                name, qtype, end = dns_question(query)
            except (socket.timeout, IndexError, struct.error):
                continue
            mode = self.mode
            self.queries[mode] += 1
            self.seen.append((time.monotonic(), mode, {1: "A", 28: "AAAA"}.get(qtype, qtype)))
            if mode == "down":
                continue
            if mode == "moved" and name == self.name and qtype == 1:
                reply = dns_answer_a(query, end, self.moved_ip, DNS_TTL)
            else:
                reply = self._forward(query)
            if reply:
                self.sock.sendto(reply, client)

    def _forward(self, query):
        try:
            self.up.send(query)
            while True:
                reply = self.up.recv(4096)
                if reply[:2] == query[:2]:
                    return reply
        except OSError:
            return None

    def close(self):
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()
        self.up.close()


NEW_PEER = "new-peer"


def start_second_peer(lab, port, exclude):
    """A second peer (a Python origin answering `hello from new-peer`) on a new address in
    the fake tailnet's range, on its HTTP port, where the moved name points; its address."""
    for host in range(1, 30):
        ip = f"127.100.250.{host}"
        if ip in exclude:
            continue
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--origin", str(port),
                                 ip, NEW_PEER], stdout=open(os.path.join(lab.dir, "new-peer.log"), "ab"),
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        lab.others.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if fetch(port, "/", NEW_PEER, ip=ip) is not None:
                return ip
            time.sleep(0.05)
    raise RuntimeError("the second peer did not start")


def probe_dns(lab, log):
    """proxy-app, nginx with `resolver` and a variable `proxy_pass`, and nginx with a static
    upstream (the peer's address, as resolved at start), in front of a fake tailnet whose
    answers live 5 s, each asking through a relay of its own, under request loops (2
    keep-alive clients each, at most 10 requests/s each): DNS answers nothing from 3 s for
    `dns_outage` s, answers again for 3 s, then answers the name with a second peer's address;
    the loops end `dns_follow_window` s later."""
    t = lab.start_tailnet(ttl=DNS_TTL)
    fqdn, port = t["fqdn"], t["http_port"]
    relays = {k: DnsRelay(t["dns"], fqdn) for k in ("proxy-app", "nginx")}
    new_ip = start_second_peer(lab, port, {t["ip"], t["dns"].split(":")[0]})
    servers = [lab._start_proxy("dns", f"{fqdn}:{port}", dns=relays["proxy-app"].addr),
               lab._start_nginx("dns", f"{fqdn}:{port}", fqdn, resolver=relays["nginx"].addr),
               lab._start_nginx("dns", t["addr"], fqdn, kind="nginx-static")]
    loops = [RequestLoop(s, workers=2, path="/") for s in servers]
    t0, at = start_clock(loops)
    events = {}

    proxy = servers[0]
    events["down"] = at(3)
    for r in relays.values():
        r.mode = "down"
    # proxy-app's own account of the outage: when it first counted a failed lookup and
    # reported a stale answer (edge_dns_lookups_total, edge_dns_stale_answers)
    failures = proxy.metric("edge_dns_lookups_total", "result").get("failure", 0)
    during = {"failure_s": None, "stale_s": None}
    while time.monotonic() < events["down"] + SCALE.dns_outage - 0.3:
        now = time.monotonic() - events["down"]
        if during["failure_s"] is None and \
                proxy.metric("edge_dns_lookups_total", "result").get("failure", 0) > failures:
            during["failure_s"] = now
        if during["stale_s"] is None and proxy.metric("edge_dns_stale_answers", "").get("", 0) > 0:
            during["stale_s"] = now
        time.sleep(0.25)
    events["back"] = at(3 + SCALE.dns_outage)
    for r in relays.values():
        r.mode = "pass"
    events["moved"] = at(3 + SCALE.dns_outage + 3)
    for r in relays.values():
        r.moved_ip, r.mode = new_ip, "moved"
    at(3 + SCALE.dns_outage + 3 + SCALE.dns_follow_window)
    for loop in loops:
        loop.finish()
    old_body, new_body = "hello from app", f"hello from {NEW_PEER}"
    results = {}
    marks = ", ".join(f"{k} at {v - t0:.3f} s" for k, v in events.items())
    for s, loop in zip(servers, loops):
        moved = [a for a in loop.attempts if a.start >= events["moved"]]
        on_new = [a.end - events["moved"] for a in moved if a.body == new_body]
        on_old = [a.end - events["moved"] for a in moved if a.body == old_body]
        # traffic has followed once every later answer comes from the new peer
        r = {
            "before": summarize(loop.ended(t0, events["down"])),
            "outage": summarize(loop.ended(events["down"], events["back"])),
            "back": summarize(loop.ended(events["back"], events["moved"])),
            "moved": {"total": len(moved), "new": len(on_new), "old": len(on_old),
                      "failed": dict(collections.Counter(a.outcome for a in moved if a.outcome != "ok"))},
            "first_new_s": min(on_new, default=None),
            "last_old_s": max(on_old, default=None),
            "queries": dict(relays[s.kind].queries) if s.kind in relays else None,
            "lookups_down": [(round(when - events["down"], 2), qtype) for when, mode, qtype in
                             relays[s.kind].seen if mode == "down"] if s.kind in relays else None,
        }
        if s.kind == "proxy-app":
            r["during_outage"] = during
            r["lookups"] = s.metric("edge_dns_lookups_total", "result")
        results[s.kind] = r
        log(f"dns {s.kind}: {r}")
        if s.kind in relays:
            log(f"  {s.kind} DNS queries: " + ", ".join(
                f"{when - t0:.2f} s {qtype} ({mode})" for when, mode, qtype in relays[s.kind].seen))
        for a in loop.attempts:
            if a.outcome != "ok":
                log(f"  {s.kind}: sent {a.start - t0:.3f} s, ended {a.end - t0:.3f} s: "
                    f"{a.outcome} ({marks})")
    lab.stop(servers)
    for r in relays.values():
        r.close()
    return results


# --------------------------------------------------------------------------------------
# File descriptors: more slow connections than the servers may open files
# --------------------------------------------------------------------------------------


def nofile_limit(pid):
    """A process's soft open-files limit, from /proc/PID/limits."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def probe_fd_exhaustion(server):
    """1,100 connections each sending half a request head (its first two lines), at once,
    to a server limited to 1,024 open files and a 5 s client_header_timeout: how many it
    closed at once; whether a new client is served while they are held (within 2 s); when
    the server closed the others (at most 3 timeouts + 2 s after the start); then whether
    3 new clients are served (2 s each)."""
    limits = sorted({nofile_limit(pid) for pid in server.pids()} - {None})
    half = b"GET /slow HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
    conns, connect_errors = [], collections.Counter()
    start = time.monotonic()
    for _ in range(FD_SLOW_CLIENTS):
        s = None
        try:
            s = connect(server.port, timeout=2)
            s.sendall(half)
        except OSError as e:
            connect_errors[type(e).__name__] += 1
            if s is not None:
                s.close()
            continue
        s.setblocking(False)
        conns.append({"sock": s, "closed": None})
    opened_s = time.monotonic() - start
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c["sock"], selectors.EVENT_READ, c)
    still_open = [len(conns)]

    def sweep(timeout):
        for c, data in ready_reads(sel, timeout):
            if data:
                continue
            c["closed"] = time.monotonic() - start
            sel.unregister(c["sock"])
            still_open[0] -= 1

    settle = time.monotonic() + 0.5
    while time.monotonic() < settle:
        sweep(0.05)
    at_once = still_open[0]
    closed_at_once = len(conns) - at_once
    fds_held = server.open_fds()
    held_at = time.monotonic() - start
    held = fetch_outcome(server.port, 2.0)
    cap = start + 3 * FD_HEADER_TIMEOUT + 2
    while still_open[0] and time.monotonic() < cap:
        sweep(0.1)
    closed = [c["closed"] for c in conns if c["closed"] is not None and c["closed"] > opened_s + 0.5]
    early = sorted(t for t in closed if t < FD_HEADER_TIMEOUT - 0.25)
    later = sorted(t for t in closed if t >= FD_HEADER_TIMEOUT - 0.25)
    after_at = time.monotonic() - start
    after = []
    for _ in range(3):
        after.append(fetch_outcome(server.port, 2.0))
        time.sleep(0.2)
    sel.close()
    for c in conns:
        c["sock"].close()
    return {
        "limits": limits, "clients": FD_SLOW_CLIENTS, "opened": len(conns),
        "connect_errors": dict(connect_errors), "opened_s": opened_s,
        "closed_at_once": closed_at_once, "fds_held": fds_held,
        "closed_early": len(early), "early_first_s": early[0] if early else None,
        "early_last_s": early[-1] if early else None,
        "held": held, "held_at_s": held_at,
        "closed_later": len(later), "later_first_s": later[0] if later else None,
        "later_median_s": statistics.median(later) if later else None,
        "later_last_s": later[-1] if later else None, "still_open": still_open[0],
        "after": after, "after_at_s": after_at,
    }


def probe_fd_limit(lab, log, connections):
    """Both servers limited to 1,024 open files, client_header_timeout 5 s, and
    `connections` (proxy-app max_connections, nginx worker_connections), probed at once."""
    pair = lab.start_pair(f"fd{connections}", header_timeout=FD_HEADER_TIMEOUT,
                          connections=connections, nofile=FD_LIMIT)
    results = {}
    threads = [in_background(results, probe_fd_exhaustion, s) for s in pair]
    for th in threads:
        th.join(3 * FD_HEADER_TIMEOUT + 30)
    for s in pair:
        r = results.setdefault(s.kind, {})
        if s.kind == "proxy-app":
            r["reasons"] = s.close_reasons()
            r["log"] = {"accept failed (EMFILE)": s.log_count("Too many open files"),
                        "accept failed": s.log_count("Accept() failed")}
        else:
            r["log"] = {"accept4() EMFILE": s.log_count("(24: Too many open files)"),
                        "worker_connections are not enough": s.log_count("worker_connections are not enough")}
        log(f"fd {connections} {s.kind}: {r}")
    lab.stop(pair)
    return results


# --------------------------------------------------------------------------------------
# The run and its report
# --------------------------------------------------------------------------------------


def in_background(results, probe, server):
    """Runs `probe(server)` in a thread that stores what it returns in
    `results[server.kind]`; returns the thread."""

    def run():
        results[server.kind] = probe(server)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_probes(lab, log):
    """Runs every probe against both servers; returns {probe: {server kind: result}}."""
    results = collections.defaultdict(dict)
    lab.start_tailnet()
    log(f"fake tailnet: {lab.tailnet}")

    # The slow probes (up to 90 s) run in the background on servers of their own.
    timing = lab.start_pair("timing")
    slow = {"slowloris": probe_slowloris,
            "idle": functools.partial(probe_idle_keepalive, partial=False),
            "partial": functools.partial(probe_idle_keepalive, partial=True)}
    for name in slow:
        results[name] = {}  # before the threads fill them in
    background = [in_background(results[name], probe, s) for name, probe in slow.items()
                  for s in timing]
    log("slowloris, idle keep-alive and partial second request: running in the background")

    for s in timing:
        results["pipelined3"][s.kind] = probe_pipelined(s, 3)
        results["pipelined100"][s.kind] = probe_pipelined(s, 100)
        results["in_flight"][s.kind] = probe_second_in_flight(s)
        results["big_response_head"][s.kind] = probe_big_response_head(s)
    log(f"functional probes: {dict((k, results[k]) for k in ('pipelined3', 'pipelined100', 'in_flight', 'big_response_head'))}")

    for name, line_size in (("big_heads_lines", 1024), ("big_heads_one_line", BIG_HEAD_BYTES)):
        pair = lab.start_pair(name)
        for s in pair:
            results[name][s.kind] = probe_big_heads(s, line_size)
            log(f"{name} {s.kind}: {results[name][s.kind]}")
        lab.stop(pair)

    pair = lab.start_pair("idle10k")
    for s in pair:
        socks, m = probe_idle_connections(s)
        close_idle_connections(s, socks, m)
        results["idle10k"][s.kind] = m
        log(f"idle10k {s.kind}: opened {m['open']} in {m['open_s']:.1f} s")
    for s in pair:
        m = results["idle10k"][s.kind]
        time.sleep(max(0.0, m.pop("closed_at") + SCALE.settle_after_close - time.monotonic()))
        m["after"] = s.rss()
        log(f"idle10k {s.kind}: {m}")
    lab.stop(pair)

    results["lifecycle"] = probe_lifecycle(lab, log)
    results["upgrade"] = probe_upgrade(lab, log)
    results["dns"] = probe_dns(lab, log)
    for connections in (FD_BELOW_LIMIT, FD_ABOVE_LIMIT):
        results[f"fd{connections}"] = probe_fd_limit(lab, log, connections)

    for t in background:
        t.join(SCALE.idle_wait_cap + 30)
    for name in ("slowloris", "idle", "partial"):
        log(f"{name}: {results[name]}")
    for s in timing:
        results["timing_reasons"][s.kind] = s.close_reasons()
    return results


def fmt_s(v):
    return "still open" if v is None else f"{v:.1f} s"


def fmt_answers(answers):
    return ", ".join(f"{n}× {a}" for a, n in sorted(answers.items(), key=lambda x: -x[1]))


def describe(probe, r):
    """One table cell: what one server did in one probe."""
    if probe.startswith("big_heads"):
        return (f"{r['closed']}/{r['clients']} closed within the limits (last at "
                f"{fmt_s(r['last_close_s'])}; {fmt_answers(r['how'])}); answers: {fmt_answers(r['answers'])}; "
                f"sent before the close: median {r['sent_kib_median']:.0f} KiB, max "
                f"{r['sent_kib_max']:.0f} KiB; RSS {mib(r['rss_before']):.1f} → peak "
                f"{mib(r['rss_peak']):.1f} (+{mib(r['rss_peak'] - r['rss_before']):.1f}) → "
                f"{mib(r['rss_after']):.1f} MiB 3 s after")
    if probe == "slowloris":
        if not r["closed"]:
            return f"0/{r['clients']} closed within {SCALE.slowloris_window:.0f} s"
        return (f"{r['closed']}/{r['clients']} closed within {SCALE.slowloris_window:.0f} s (first {r['first_s']:.1f} s, "
                f"median {r['median_s']:.1f} s, last {r['last_s']:.1f} s after connecting); "
                f"answers: {fmt_answers(r['answers'])}")
    if probe == "idle10k":
        per_conn = (r["with"] - r["idle"]) / max(r["open"], 1)
        return (f"{r['open']:,} open ({r['answered']:,} answered 200, in {r['open_s']:.1f} s); "
                f"RSS before any request {mib(r['cold']):.1f} MiB, idle after 100 requests "
                f"{mib(r['idle']):.1f} MiB, with them {mib(r['with']):.1f} MiB: "
                f"**{per_conn:.2f} KiB/connection**; {SCALE.settle_after_close:.0f} s after closing "
                f"{mib(r['after']):.1f} MiB = **{100 * r['after'] / r['idle']:.0f}% of idle**")
    if probe in ("idle", "partial"):
        text = f"closed after {fmt_s(r['closed_after_s'])}"
        if r["closed_after_s"] is None:
            text = f"still open after {SCALE.idle_wait_cap:.0f} s"
        return text + f"; answer: {r['answer']}"
    if probe.startswith("pipelined"):
        order = "in order" if r["in_order"] else "**out of order**"
        tail = f", then {r['tail']}" if r["tail"] else ""
        return f"{r['answered']}/{r['sent']} answered, {order}{tail}"
    if probe == "in_flight":
        both = len([a for a in r["answers"] if a[0] == 200]) == 2
        parts = "; ".join(f"{a[0]} for #{a[1]} at {a[2]} ms" for a in r["answers"])
        return f"{'both answered' if both else '**not both answered**'}: {parts}"
    if probe == "big_response_head":
        return f"{r['status']}"
    raise KeyError(probe)


def describe_phase(p, connection=False):
    """Failed out of total, by outcome; with `connection`, the answers' Connection headers."""
    failed = p["total"] - p["ok"]
    rest = {k: v for k, v in p["outcomes"].items() if k != "ok"}
    text = f"{failed}/{p['total']} failed" + (f" ({fmt_answers(rest)})" if rest else "")
    if connection and p["connection"]:
        text += "; answers with " + fmt_answers({f"Connection: {k}": v for k, v in p["connection"].items()})
    return text


def describe_stop(r):
    """In flight at the signal, then sent after it on kept-alive connections (refused new
    connections are expected: the listener is closed)."""
    inflight, after = r["phases"]["in_flight_at_stop"], r["phases"]["sent_after_stop"]
    refused = after["outcomes"].get("refused", 0)
    rest = {k: v for k, v in after["outcomes"].items() if k not in ("ok", "refused")}
    kept = after["total"] - refused
    return (f"in flight at the signal: {describe_phase(inflight, True)}; "
            f"sent after it on open connections: {kept - after['ok']}/{kept} failed"
            + (f" ({fmt_answers(rest)})" if rest else "")
            + f"; {refused} new connections refused; exited {fmt_s(r['exit_after_s'])} after the signal")


LIFECYCLE_ROWS = [
    ("lifecycle: config reload (proxy-app SIGHUP, `nginx -s reload`), requests from the start "
     "until the origin is killed",
     lambda r: f"{describe_phase(r['phases']['reload'])}; new config answering: {r['reload_applied']}"),
    ("lifecycle: origin killed (SIGKILL), 2 s down",
     lambda r: describe_phase(r["phases"]["down"], connection=True)),
    ("lifecycle: origin back on the same port, until the stop",
     lambda r: f"{describe_phase(r['phases']['back'])}; first 200 {fmt_s(r['first_ok_after_back_s'])} after"),
    ("lifecycle: graceful stop (proxy-app SIGTERM, nginx SIGQUIT)", describe_stop),
]


def describe_phases(phases, connection=False):
    return "; ".join(f"{name}: {describe_phase(p, connection)}" for name, p in phases.items())


def describe_log(counts):
    counts = {k: v for k, v in counts.items() if v}
    return f"; log: {fmt_answers(counts)}" if counts else ""


def describe_handover(r):
    new = ("**no new process**" if r["new_ready_s"] is None else
           f"new process up {1000 * r['new_ready_s']:.0f} ms after its start")
    return (f"{new}; old process exited {fmt_s(r['exit_after_s'])} after the signal; "
            f"new config (`= /upgraded`) answering: {'yes' if r['upgraded'] else '**no**'}"
            f"{describe_log(r['log'])}")


UPGRADE_ROWS = [
    ("binary upgrade under load: 4 keep-alive clients (100 ms requests); before the new "
     "process, during the handover (until the old one exited), after",
     lambda r: describe_phases(r["clients"]["keep-alive"], connection=True)),
    ("binary upgrade under load: 2 clients opening a connection per request",
     lambda r: describe_phases(r["clients"]["fresh"])),
    ("binary upgrade: the handover (proxy-app `run --upgrade` at 2 s, SIGQUIT to the old "
     "process at 3 s; nginx USR2 at 2 s, QUIT to the old master at 3 s)", describe_handover),
]


def describe_dns_outage(r):
    text = (f"{describe_phase(r['outage'])}; before it: {describe_phase(r['before'])}; "
            f"DNS back, before the move: {describe_phase(r['back'])}")
    if r["queries"] is not None:
        text += f"; queries dropped: {r['queries'].get('down', 0)}"
        text += (" (" + ", ".join(f"{q} {t:.1f}" for t, q in r["lookups_down"])
                 + " s into the outage)")
    during = r.get("during_outage")
    if during:
        text += ("; first failed lookup counted "
                 + ("not during the outage" if during["failure_s"] is None else f"{during['failure_s']:.1f} s into it")
                 + ", `edge_dns_stale_answers` above 0 "
                 + ("not during the outage" if during["stale_s"] is None else f"from {during['stale_s']:.1f} s"))
    return text


def describe_dns_move(r):
    m = r["moved"]
    first = ("no answer from the new peer" if r["first_new_s"] is None
             else f"first answer from the new peer {r['first_new_s']:.1f} s after the change")
    last = ("none from the old one" if r["last_old_s"] is None
            else f"last from the old one {r['last_old_s']:.1f} s after")
    failed = sum(m["failed"].values())
    return (f"{first}, {last}; requests sent after the change: {m['new']} new peer, "
            f"{m['old']} old peer, {failed} failed" + (f" ({fmt_answers(m['failed'])})" if failed else ""))


def dns_cells(results, describe_one):
    """proxy-app's cell, and nginx's: with `resolver`, then with a static upstream."""
    nginx = describe_one(results["nginx"])
    if "nginx-static" in results:
        nginx += f". **Static upstream** (resolved at start): {describe_one(results['nginx-static'])}"
    return describe_one(results["proxy-app"]), nginx


def describe_fd(r):
    if "clients" not in r:
        return "not run"
    early = ""
    if r["closed_early"]:
        when = f"{r['early_first_s']:.1f} s"
        if f"{r['early_last_s']:.1f}" != f"{r['early_first_s']:.1f}":
            when = f"from {when} to {r['early_last_s']:.1f} s"
        early = f"; {r['closed_early']} more closed before the timeout ({when})"
    later = f"{r['closed_later']} closed at or after the timeout"
    if r["closed_later"]:
        later += (f" (first {r['later_first_s']:.1f} s, median {r['later_median_s']:.1f} s, "
                  f"last {r['later_last_s']:.1f} s after the first connect)")
    errors = f" ({fmt_answers(r['connect_errors'])} on connect)" if r["connect_errors"] else ""
    reasons = ""
    if r.get("reasons"):
        reasons = "; closes by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items()))
    return (f"open-files limit {'/'.join(map(str, r['limits']))}; {r['opened']:,}/{r['clients']:,} "
            f"connected in {r['opened_s']:.1f} s{errors}; {r['closed_at_once']} closed at once "
            f"(within 0.5 s); then {r['fds_held']} fds open; **a new client while they were held "
            f"({r['held_at_s']:.1f} s): {r['held']}**{early}; {later}, {r['still_open']} still open; **new clients after ({r['after_at_s']:.0f} s): "
            f"{', '.join(r['after'])}**{reasons}{describe_log(r['log'])}")


def probe_labels():
    """The report's rows: (probe, what it does)."""
    return [
        ("big_heads_lines", f"{SCALE.big_head_clients} connections each sending an unterminated ~1 MiB request head (1 KiB header lines)"),
        ("big_heads_one_line", f"{SCALE.big_head_clients} connections each sending an unterminated ~1 MiB request head (one 1 MiB header line)"),
        ("slowloris", f"{SCALE.slowloris_clients:,} slowloris connections (one head byte every 5 s)"),
        ("idle10k", f"{SCALE.idle_connections:,} idle keep-alive connections after one request each"),
        ("idle", "an idle keep-alive connection after one request"),
        ("partial", "a partial second request (head without its blank line) after one request"),
        ("pipelined3", "3 pipelined GETs in one write"),
        ("pipelined100", "100 pipelined GETs in one write"),
        ("in_flight", "a second GET sent 100 ms into a 300 ms first request"),
        ("big_response_head", "an origin answering with a 100 KiB response header"),
    ]


def memory_targets(results):
    """The issue's targets: (target, proxy-app measure, met, nginx measure)."""
    rows = []
    idle = results["idle10k"]

    def per_conn(k):
        return (idle[k]["with"] - idle[k]["idle"]) / max(idle[k]["open"], 1)

    rows.append(("10,000 idle keep-alive connections cost at most 4 KiB each over the idle process",
                 f"{per_conn('proxy-app'):.2f} KiB/connection ({idle['proxy-app']['open']:,} open)",
                 per_conn("proxy-app") <= 4 and idle["proxy-app"]["open"] == SCALE.idle_connections,
                 f"{per_conn('nginx'):.2f} KiB/connection"))
    for name, label in (("big_heads_lines", "1 KiB lines"), ("big_heads_one_line", "one line")):
        b = results[name]

        def rise(k):
            return mib(b[k]["rss_peak"] - b[k]["rss_before"])

        rows.append((f"300 unterminated 1 MiB heads ({label}) raise RSS by at most 32 MiB and all are closed within the limits",
                     f"+{rise('proxy-app'):.1f} MiB, {b['proxy-app']['closed']}/{b['proxy-app']['clients']} closed",
                     rise("proxy-app") <= 32 and b["proxy-app"]["closed"] == b["proxy-app"]["clients"],
                     f"+{rise('nginx'):.1f} MiB, {b['nginx']['closed']}/{b['nginx']['clients']} closed"))

    def share(k):
        return idle[k]["after"] / idle[k]["idle"]

    rows.append(("RSS within 10% of its idle value 30 s after 10,000 connections close",
                 f"{mib(idle['proxy-app']['after']):.1f} MiB = {100 * share('proxy-app'):.0f}% of {mib(idle['proxy-app']['idle']):.1f} MiB",
                 abs(share("proxy-app") - 1) <= 0.10,
                 f"{mib(idle['nginx']['after']):.1f} MiB = {100 * share('nginx'):.0f}% of {mib(idle['nginx']['idle']):.1f} MiB"))
    return rows


def host_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(args):
    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    commit = out(["git", "-C", repo, "describe", "--always", "--dirty"])
    return (f"{out([args.proxy_bin, '--version'])} (commit {commit}); {out(['nginx', '-v'])}; "
            f"Python {platform.python_version()}; Linux {platform.release()}")


def report(results, args, started, elapsed):
    """The Markdown report."""
    lines = [
        "# Reliability run: proxy-app and nginx side by side",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- host CPU: {host_cpu()}",
        f"- command: `{args.command}`",
        f"- versions: {versions(args)}",
        f"- duration: {elapsed / 60:.1f} min; loopback only; servers pinned to core 0, "
        "clients, fake tailnet and origin to core 1",
        "",
        "Both servers: one worker/thread, client limits at their defaults (client_header_timeout "
        f"{SCALE.header_timeout:.0f} s, keepalive_timeout {SCALE.keepalive_timeout:.0f} s, 8k lines, "
        "32k heads), upstream keepalive 128, an 8k "
        f"response head limit, {MAX_CONNECTIONS} connections, listen backlog 4096, no access log. "
        "RSS is VmRSS (nginx: master + worker); peaks are VmHWM, reset before the probe. "
        "proxy-app runs with no `MIMALLOC_*` variables: its mimalloc arena is committed as used, "
        "its default.",
        "",
        "## Probes",
        "",
        "| probe | proxy-app | nginx 1.22 |",
        "|---|---|---|",
    ]
    for probe, label in probe_labels():
        r = results.get(probe, {})
        cells = [describe(probe, r[k]) if k in r else "not run" for k in ("proxy-app", "nginx")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    life = results.get("lifecycle", {})
    if life:
        for label, cell in LIFECYCLE_ROWS:
            lines.append(f"| {label} | {cell(life['proxy-app'])} | {cell(life['nginx'])} |")
    upgrade = results.get("upgrade", {})
    if upgrade:
        for label, cell in UPGRADE_ROWS:
            lines.append(f"| {label} | {cell(upgrade['proxy-app'])} | {cell(upgrade['nginx'])} |")
    dns = results.get("dns", {})
    if dns:
        outage = (f"DNS outage under load: every query dropped for {SCALE.dns_outage:.0f} s "
                  f"(answers' TTL {DNS_TTL} s), 2 keep-alive clients per server")
        move = (f"the name's answer changed to a second peer's address (DNS answering again for "
                f"3 s before): how long until traffic follows (watched {SCALE.dns_follow_window:.0f} s)")
        for label, describe_one in ((outage, describe_dns_outage), (move, describe_dns_move)):
            cells = dns_cells(dns, describe_one)
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for connections in (FD_BELOW_LIMIT, FD_ABOVE_LIMIT):
        fd = results.get(f"fd{connections}", {})
        if fd:
            label = (f"{FD_SLOW_CLIENTS:,} slow connections (half-sent heads) against an open-files "
                     f"limit of {FD_LIMIT:,}, client_header_timeout {FD_HEADER_TIMEOUT:.0f} s, "
                     f"{connections:,} connections (max_connections, worker_connections)")
            lines.append(f"| {label} | {describe_fd(fd.get('proxy-app', {}))} | "
                         f"{describe_fd(fd.get('nginx', {}))} |")
    lines += ["", "## Memory targets (proxy-app; nginx beside)", "",
              "| target | proxy-app | met | nginx |", "|---|---|---|---|"]
    for target, proxy, met, nginx in memory_targets(results):
        lines.append(f"| {target} | {proxy} | {'yes' if met else '**no**'} | {nginx} |")
    def reasons(counts):
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

    heads = {name: results[name].get("proxy-app", {}).get("reasons", {})
             for name in ("big_heads_lines", "big_heads_one_line")}
    lines += ["", "proxy-app's `edge_client_closes_total` by reason: slowloris/idle/partial "
              f"servers: {reasons(results.get('timing_reasons', {}).get('proxy-app', {}))}; "
              f"1 KiB lines: {reasons(heads['big_heads_lines'])}; "
              f"one line: {reasons(heads['big_heads_one_line'])}.", ""]
    return "\n".join(lines)


def interrupt(signum, frame):
    """SIGTERM ends the run as Ctrl-C does: every process is stopped on the way out."""
    raise KeyboardInterrupt


def main():
    if sys.argv[1:2] == ["--origin"]:  # --origin PORT [IP NAME]
        run_origin(int(sys.argv[2]), *sys.argv[3:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy-bin", required=True)
    parser.add_argument("--tailnet-bin", required=True)
    parser.add_argument("--out", help="also write the report here")
    parser.add_argument("--command", default="benches/reliability/run.sh")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--quick", action="store_true",
                        help="few clients and 5 s/8 s server timeouts: checks the probes in about 2 minutes")
    args = parser.parse_args()
    if args.quick:
        global SCALE
        SCALE = QUICK

    raise_open_files_limit()
    needed = SCALE.idle_connections + 2 * SCALE.slowloris_clients + 1000
    if open_files_limit() < needed:
        print(f"probe: needs {needed} open files, the hard limit is {open_files_limit()}",
              file=sys.stderr)
        return 2
    if TWO_CORES:
        os.sched_setaffinity(0, {CLIENT_CORE})
    signal.signal(signal.SIGTERM, interrupt)

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()

    def log(msg):
        print(f"[{time.monotonic() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    lab = Lab(args)
    keep = args.keep
    try:
        results = run_probes(lab, log)
    except KeyboardInterrupt:
        log("interrupted: stopping every process")
        return 130
    except Exception:
        keep = True
        log(f"failed: the servers' logs stay in {lab.dir}")
        raise
    finally:
        lab.close(keep_dir=keep)
    text = report(results, args, started, time.monotonic() - t0)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

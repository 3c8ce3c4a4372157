"""What tools/soak and tools/slowloris share: building, the server process,
its /proc figures, its /metrics, raw HTTP and WebSocket probes.

Standard library only: the scripts run with /usr/bin/python3 on a fresh
Debian 12 machine."""
import base64
import hashlib
import json
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
HTTP_HELLO = "examples/http-hello"
KEEL_LOAD = "tools/keel-load/keel-load"
HELLO = b"Hello, World!"
# What a sanitizer prints when it finds something (ASan, LSan, UBSan, TSan).
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|"
                          r"WARNING: ThreadSanitizer|SUMMARY: \w+Sanitizer")


def say(prog, msg):
    print(f"{prog}: {msg}", flush=True)


def die(prog, msg):
    print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# ------------------------------------------------------------------ building

def resolve_build_dir(value):
    """--build-dir, relative to the repository when it is not absolute;
    build-release (tools/bench's release tree) when it is not given."""
    path = Path(value or os.environ.get("KEEL_BENCH_BUILD_DIR", "build-release"))
    return (path if path.is_absolute() else ROOT / path).resolve()


def build(prog, build_dir, no_build):
    """Makes sure http-hello and keel-load in build_dir are built and up to
    date: configures a release tree first if there is none."""
    targets = [HTTP_HELLO, KEEL_LOAD]
    if no_build:
        missing = [t for t in targets if not os.access(build_dir / t, os.X_OK)]
        if missing:
            die(prog, f"no {', '.join(str(build_dir / t) for t in missing)} (run without --no-build)")
        return
    if not (build_dir / "build.ninja").exists():
        say(prog, f"configuring {build_dir} (--buildtype=release)")
        if subprocess.run(["meson", "setup", str(build_dir), "--buildtype=release"],
                          cwd=ROOT).returncode != 0:
            die(prog, f"meson setup {build_dir} failed")
    say(prog, f"building {', '.join(targets)} in {build_dir}")
    if subprocess.run(["ninja", "-C", str(build_dir)] + targets, cwd=ROOT,
                      stdout=subprocess.DEVNULL).returncode != 0:
        die(prog, f"ninja -C {build_dir} failed")


def sanitizers(build_dir):
    """The build tree's b_sanitize ("none", "address,undefined", "thread")."""
    try:
        opts = json.loads((build_dir / "meson-info" / "intro-buildoptions.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    for o in opts:
        if o.get("name") == "b_sanitize":
            value = o.get("value")
            return ",".join(value) if isinstance(value, list) else str(value)
    return "none"


def result_name(stem, backend, san):
    """soak-uring, soak-uring-asan, soak-epoll-tsan, ..."""
    short = {"address,undefined": "-asan", "address": "-asan", "undefined": "-ubsan",
             "thread": "-tsan", "none": "", "": ""}.get(san, "-" + san.replace(",", "-"))
    return f"{stem}-{backend}{short}"


def sanitizer_env():
    """Sanitizer reports with stacks; the exit status tells (ASan and LSan
    exit 1 by default, TSan 66 at exit when it reported)."""
    env = dict(os.environ)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    env.setdefault("TSAN_OPTIONS", "second_deadlock_stack=1")
    return env


def sanitizer_reports(path, limit=5):
    """The first lines of sanitizer reports in a log file."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if SANITIZER_RE.search(line)][:limit]


def uring_ok():
    """Can this process set up an io_uring (a seccomp profile may forbid it)?"""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 4, params)  # io_uring_setup
    if fd >= 0:
        os.close(fd)
    return fd >= 0


# ------------------------------------------------------------------ limits

def raise_nofile(prog, need):
    """Raises the soft descriptor limit to the hard one (children inherit
    it); dies if even that is below need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < need:
        die(prog, f"the descriptor limit is {hard} (ulimit -Hn), {need} are needed")
    return hard


def ephemeral_ports():
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return None


def fuzzers_running():
    """Fuzzing processes on the machine: command lines with "fuzz_" in
    them, as `pgrep -af fuzz_` finds them."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if "fuzz_" in cmd and int(pid) != os.getpid():
            found.append(f"{pid} {cmd}")
    return found


# ------------------------------------------------------------------ /proc

def read_proc(pid, name):
    with open(f"/proc/{pid}/{name}", "r") as f:
        return f.read()


def rss_kib(pid):
    m = re.search(r"^VmRSS:\s+(\d+)", read_proc(pid, "status"), re.M)
    return int(m.group(1)) if m else 0


def threads(pid):
    m = re.search(r"^Threads:\s+(\d+)", read_proc(pid, "status"), re.M)
    return int(m.group(1)) if m else 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid):
    """Descriptors by what they are (socket, anon_inode:[eventfd], ...)."""
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = re.sub(r":\[\d+\]$", "", target) if target.startswith(("socket:", "pipe:")) \
            else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def cpu_busy():
    """Seconds each CPU has spent busy (not idle nor waiting for I/O), by
    CPU number: the time since boot less /proc/stat's idle and iowait.
    The sum of /proc/stat's user, system and the rest (sampled at the
    tick) came to about a twentieth of a slowloris server's own CPU time
    here (it wakes briefly, many times between ticks); the time less idle
    agreed with the processes' own figures. io_uring's waits count as
    iowait."""
    busy = {}
    tick = os.sysconf("SC_CLK_TCK")
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in fields[:8]]
            busy[int(name[3:])] = now - (v[3] + v[4]) / tick
    return busy


def wait_rusage(proc, timeout):
    """Waits for a Popen child like proc.wait(timeout), and returns its exit
    status and the CPU seconds it used (None, None after the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.05)


def cpu_seconds(pid):
    """utime + stime, counted from after the command name's ')'."""
    fields = read_proc(pid, "stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the server

class Server:
    """examples/http-hello, started with --port 0; its stdout gives the port,
    its stderr goes to a log file."""

    def __init__(self, prog, cmd, log_path, env=None, preexec=None):
        self.prog, self.log_path = prog, Path(log_path)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, preexec_fn=preexec)
        self.pid = self.proc.pid
        self.port = None
        self.banner = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port, self.banner = int(m.group(1)), line.strip()
                break
        if self.port is None:
            self.kill()
            die(prog, f"the server did not start: {' '.join(cmd)}\n"
                + self.log_path.read_text(errors="replace")[-2000:])
        # Drain stdout (nothing more is expected) so that it never blocks.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=60):
        """SIGTERM (the graceful drain), then the exit status; SIGKILL after
        timeout seconds (returns None then)."""
        if self.alive():
            self.proc.terminate()
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            status = None
        self.log.close()
        return status

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()


def start_load(cmd, out_path, err_path, env=None, preexec=None):
    """A keel-load process: its JSON to out_path, its stderr to err_path."""
    return subprocess.Popen(cmd, stdout=open(out_path, "w"), stderr=open(err_path, "w"),
                            env=env, preexec_fn=preexec)


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ /metrics

LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port, timeout=30):
    """GET /metrics: {(name, ((label, value), ...)): float}."""
    status, body = http_get(port, "/metrics", timeout)
    if status != 200:
        raise OSError(f"/metrics answered {status}")
    series = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        if m:
            labels = tuple(sorted(LABEL_RE.findall(m.group(3) or "")))
            series[(m.group(1), labels)] = float(m.group(4))
    return series


def metric(series, name, **labels):
    """The sum of name's series whose labels include the ones given."""
    total = 0.0
    for (n, ls), v in series.items():
        if n == name and all((k, str(val)) in ls for k, val in labels.items()):
            total += v
    return total


def metric_by(series, name, label):
    """{label value: sum} over name's series."""
    out = {}
    for (n, ls), v in series.items():
        if n == name:
            key = dict(ls).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


# ------------------------------------------------------------------ probes

def recv_until(sock, marker, limit=1 << 20):
    buf = b""
    while marker not in buf:
        got = sock.recv(65536)
        if not got:
            raise OSError("the server closed the connection")
        buf += got
        if len(buf) > limit:
            raise OSError("no end of the response")
    return buf


def http_get(port, path, timeout=30):
    """One GET on a connection of its own: (status, body). Content-Length
    bodies only (what http-hello sends)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        buf = recv_until(s, b"\r\n\r\n")
        head, body = buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        while len(body) < length:
            got = s.recv(65536)
            if not got:
                raise OSError("the server closed the connection in a body")
            body += got
        return status, body[:length]


def ws_echo(port, path, payload, timeout=30):
    """Upgrades, sends payload as one masked binary frame, returns the echo's
    payload, and closes with 1000."""
    key = base64.b64encode(os.urandom(16)).decode()
    want = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = recv_until(s, b"\r\n\r\n")
        head, rest = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101") or want not in head:
            raise OSError(f"no upgrade: {head[:80]!r}")
        s.sendall(ws_frame(2, payload))
        while len(rest) < 2:
            rest += s.recv(65536)
        n = rest[1] & 0x7F
        hlen = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        while len(rest) < hlen:
            rest += s.recv(65536)
        if n == 126:
            n = struct.unpack(">H", rest[2:4])[0]
        elif n == 127:
            n = struct.unpack(">Q", rest[2:10])[0]
        while len(rest) < hlen + n:
            rest += s.recv(65536)
        s.sendall(ws_frame(8, struct.pack(">H", 1000)))
        return rest[hlen:hlen + n]


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# ------------------------------------------------------------------ figures

def slope_per_minute(points):
    """Least-squares slope of (seconds, value) points, per minute; None with
    fewer than three points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60.0


def stamp():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

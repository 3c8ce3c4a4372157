#!/usr/bin/python3
"""Checks a run of examples/ws-client --json against the --log of the feed
server(s) it talked to (tests/wsc_chaos.sh).

usage: wsc_check.py --label NAME --client OUT --summary ERR --status N
                    --topics a,b --backoff-max-ms MS
                    (--log FILE | --instances FILE --bound-s S)
                    [--min-reconnects N] [--seqs]

OUT is the client's stdout (JSON lines), ERR its stderr (the summary line),
N its exit status. With --log, the client talked to one server process, whose
--log is FILE. With --instances (the kill loop), to a server killed and
started again on one port: FILE has a line per process, in order,
"LAUNCH_T LISTEN_T KILL_T LOG" (unix seconds: started, seen listening,
SIGKILLed, or "-" for the last one, stopped with SIGTERM at the end), and
each reconnect must come within S seconds of its process listening.

What is checked:
  - every line is JSON; every request that had a "send" line resolved exactly
    once (no outcome without a send); the exit status is 0 and the summary
    agrees with the outcome lines; failures are "disconnected" or "timeout";
  - connect epochs rise; at least --min-reconnects reconnects; the k-th
    "auth" line (printed before its connection becomes epoch k, so it
    carries epoch k-1) names the server connection that the connect line of
    epoch k names; every disconnect's backoff is within --backoff-max-ms;
  - every connection that got through (a connect line) subscribed to every
    topic on its epoch (the sub lines come just before its connect line:
    subscribing is part of the connect sequence), "from" being the last
    sequence number the client had taken on that topic plus one, or null
    before it took any;
  - every "ok" answer is in the server's log, answered exactly once, on the
    server connection of the epoch the client got it on (so never on
    another); no log line answers an id the client did not send; the log's
    lines have the documented shape, and per connection: open, auth, the
    answers, drop or close;
  - with --seqs: per topic, the updates taken rise one by one over the
    whole run (no gap, no epoch going back), and the summary counts no gap
    and no duplicate;
  - with --instances: each process got a connection (epochs are assigned to
    processes by the time of their auth line, which the process must have
    sent), the first one within --bound-s of it listening; an "ok" answer
    missing from the log of a killed process is allowed once per connection
    (SIGKILL between writing the answer and logging it).

Prints "ok ..." per check passed, "FAIL ..." with examples per check failed,
and one "figures NAME: ..." line; exits 0 if nothing failed, else 1."""

import argparse
import collections
import json
import re
import sys

FAILED_REASONS = ("disconnected", "timeout")
EXAMPLES = 5  # ids or lines quoted per failure


class Report:
    def __init__(self, label):
        self.label = label
        self.failures = 0

    def ok(self, what):
        print("ok %s: %s" % (self.label, what))

    def fail(self, what, examples=()):
        self.failures += 1
        print("FAIL %s: %s" % (self.label, what))
        for example in list(examples)[:EXAMPLES]:
            print("  | %s" % (example,))

    def check(self, cond, what, examples=()):
        if cond:
            self.ok(what)
        else:
            self.fail(what, examples)
        return cond


class Run:
    """What the client's stdout says, in the order it was printed. Runs
    have millions of requests: an outcome is kept as one int,
    epoch * KINDS + the index of its kind ("ok", or the reason of a
    failure) in kinds."""

    KINDS = 64

    def __init__(self):
        self.bad_lines = []
        self.sends = set()
        self.sent_twice = []
        self.outcomes = {}  # id -> epoch * KINDS + kind
        self.resolved_twice = []  # (id, line)
        self.kinds = ["ok"]
        self.connects = []  # (epoch, t, conn)
        self.auths = []  # (epoch, t, conn)
        self.disconnects = []  # (epoch, reason, delay_ms)
        self.subs = collections.defaultdict(list)  # (epoch, topic) -> [from]
        self.updates = collections.defaultdict(list)  # topic -> [(epoch, seq)]

    def kind_index(self, kind):
        if kind not in self.kinds:
            if len(self.kinds) == self.KINDS:
                raise ValueError("too many kinds of outcome")
            self.kinds.append(kind)
        return self.kinds.index(kind)

    def outcome(self, req_id):
        """(epoch, "ok" or the reason of the failure), or None."""
        packed = self.outcomes.get(req_id)
        return None if packed is None else divmod_kind(self, packed)


def divmod_kind(run, packed):
    epoch, kind = divmod(packed, Run.KINDS)
    return epoch, run.kinds[kind]


def read_run(path):
    run = Run()
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            try:
                take_line(run, json.loads(line), line)
            except (ValueError, KeyError, TypeError):
                run.bad_lines.append("line %d: %s" % (number, line.rstrip()[:200]))
    return run


def take_line(run, obj, line):
    if "outcome" in obj:
        req_id, outcome = obj["id"], obj["outcome"]
        kind = "ok" if outcome == "ok" else obj["reason"] if outcome == "failed" else outcome
        if req_id in run.outcomes:
            run.resolved_twice.append((req_id, line.rstrip()))
        else:
            run.outcomes[req_id] = obj["epoch"] * Run.KINDS + run.kind_index(kind)
        return
    event, epoch = obj["event"], obj["epoch"]
    if event == "send":
        if obj["id"] in run.sends:
            run.sent_twice.append(obj["id"])
        run.sends.add(obj["id"])
    elif event == "connect":
        run.connects.append((epoch, obj["t"], obj["conn"]))
    elif event == "auth":
        run.auths.append((epoch, obj["t"], obj["conn"]))
    elif event == "disconnect":
        run.disconnects.append((epoch, obj["reason"], obj["delay_ms"]))
    elif event == "sub":
        run.subs[(epoch, obj["topic"])].append(obj["from"])
    elif event == "update":
        run.updates[obj["topic"]].append((epoch, obj["seq"]))
    elif event != "unsub":
        raise ValueError("unknown event")


SUMMARY = re.compile(r"summary: requests sent (\d+) ok (\d+) failed disconnected (\d+) "
                     r"timeout (\d+) error (\d+) other (\d+) never resolved (\d+); "
                     r"reconnects (\d+);(.*)")
TOPIC = re.compile(r" topic (\S+) updates (\d+) gaps (\d+) dups (\d+)")


def read_summary(path):
    """The summary's numbers as a dict, with "topics": {name: (updates,
    gaps, dups)}; None without a summary line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = SUMMARY.match(line.strip())
            if m:
                keys = ("sent", "ok", "disconnected", "timeout", "error", "other", "never",
                        "reconnects")
                out = dict(zip(keys, (int(g) for g in m.groups()[:8])))
                out["topics"] = {t: (int(u), int(g), int(d))
                                 for t, u, g, d in TOPIC.findall(m.group(9))}
                return out
    return None


# ---- The server's log ---------------------------------------------------------------

LOG_EVENTS = ("open", "auth", "drop", "close")


class Log:
    """One server process's --log: answers[id] = conn (and the ids
    answered more than once), and the lines that break the documented
    shape or the per-connection order."""

    def __init__(self, path, killed):
        self.path = path
        self.killed = killed
        self.answers = {}  # id -> conn
        self.answered_twice = []  # (id, conn)
        self.bad = []
        self.lines = 0
        self.conns = {}  # conn -> state: "open", "auth", "end"

    def take(self, number, obj):
        where = "%s:%d %s" % (self.path, number, json.dumps(obj))
        conn = obj.get("conn")
        if not isinstance(conn, int) or isinstance(conn, bool) or conn < 1:
            self.bad.append(where + ": conn")
        elif set(obj) == {"conn", "event"} and obj["event"] in LOG_EVENTS:
            self.take_event(conn, obj["event"], where)
        elif set(obj) == {"conn", "id", "method"} and isinstance(obj["id"], int):
            if self.conns.get(conn) != "auth":
                self.bad.append(where + ": an answer outside open..auth..end")
            if obj["id"] in self.answers:
                self.answered_twice.append((obj["id"], conn))
            else:
                self.answers[obj["id"]] = conn
        else:
            self.bad.append(where + ": not a documented line")

    def take_event(self, conn, event, where):
        state = self.conns.get(conn)
        nxt = {(None, "open"): "open", ("open", "auth"): "auth", ("open", "drop"): "end",
               ("open", "close"): "end", ("auth", "drop"): "end", ("auth", "close"): "end"}
        if (state, event) not in nxt:
            self.bad.append("%s: %s after %s" % (where, event, state or "nothing"))
        else:
            self.conns[conn] = nxt[(state, event)]

    def unended(self):
        return [c for c, state in self.conns.items() if state != "end"]


def read_log(path, killed):
    log = Log(path, killed)
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            log.lines += 1
            if killed and not line.endswith("\n"):
                # The last line of a server killed while it wrote it (a
                # write to a file stops short at a fatal signal): its
                # answer counts as missing, which a killed server may be.
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                log.bad.append("%s:%d: not JSON: %s" % (path, number, line.rstrip()[:200]))
                continue
            if isinstance(obj, dict):
                log.take(number, obj)
            else:
                log.bad.append("%s:%d: not an object" % (path, number))
    return log


class Instance:
    def __init__(self, launch_t, listen_t, kill_t, log):
        self.launch_t = launch_t
        self.listen_t = listen_t
        self.kill_t = kill_t  # None: not killed
        self.log = log
        self.epochs = []


def read_instances(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            launch, listen, kill, log = line.split()
            killed = kill != "-"
            out.append(Instance(float(launch), float(listen), float(kill) if killed else None,
                                read_log(log, killed)))
    return out


# ---- Checks -------------------------------------------------------------------------


def check_resolved(rep, run, status, summary):
    rep.check(not run.bad_lines, "%d request ids, every line JSON" % len(run.sends),
              run.bad_lines)
    rep.check(not run.sent_twice, "every request id sent once",
              ["id %d" % i for i in run.sent_twice])
    missing = sorted(i for i in run.sends if i not in run.outcomes)
    rep.check(not missing, "every request sent resolved", ["id %d: no outcome" % i for i in missing])
    rep.check(not run.resolved_twice, "no request resolved twice",
              ["id %d: %s, then %s" % (i, run.outcome(i), line) for i, line in run.resolved_twice])
    extra = sorted(i for i in run.outcomes if i not in run.sends)
    rep.check(not extra, "no outcome without a send", ["id %d" % i for i in extra])
    rep.check(status == 0, "the client's exit status is 0", ["status %d" % status])
    counts = outcome_counts(run)
    odd = [k for k in counts if k != "ok" and k not in FAILED_REASONS]
    rep.check(not odd, "failures are only %s" % " or ".join(FAILED_REASONS),
              ["%d failed %s" % (counts[k], k) for k in odd])
    if rep.check(summary is not None, "the summary line is there", ["no summary line"]):
        mine = (len(run.sends), counts["ok"], counts["disconnected"], counts["timeout"], 0)
        theirs = (summary["sent"], summary["ok"], summary["disconnected"], summary["timeout"],
                  summary["never"])
        rep.check(mine == theirs, "the summary agrees with the lines (sent, ok, disconnected, "
                  "timeout, never resolved)", ["lines %s, summary %s" % (mine, theirs)])
    return counts


def outcome_counts(run):
    """{"ok" or reason: requests}."""
    by_index = collections.Counter(packed % Run.KINDS for packed in run.outcomes.values())
    return collections.Counter({run.kinds[i]: n for i, n in by_index.items()})


def check_connections(rep, run, min_reconnects, backoff_max_ms):
    """Returns {epoch: server conn} from the connect lines."""
    epochs = [e for e, _, _ in run.connects]
    rising = all(a < b for a, b in zip(epochs, epochs[1:]))
    rep.check(rising and epochs and epochs[0] >= 1, "connect epochs rise (%d connects)" %
              len(epochs), ["epochs %s" % epochs[:40]])
    rep.check(len(epochs) - 1 >= min_reconnects, "at least %d reconnects (%d)" %
              (min_reconnects, len(epochs) - 1))
    conn_of = {e: c for e, _, c in run.connects}
    wrong = []
    for k, (epoch, _, conn) in enumerate(run.auths, 1):
        if epoch != k - 1:
            wrong.append("auth line %d carries epoch %d, not %d" % (k, epoch, k - 1))
        elif k in conn_of and conn_of[k] != conn:
            wrong.append("epoch %d: connect says conn %d, its auth conn %d" %
                         (k, conn_of[k], conn))
    wrong += ["epoch %d: a connect line without an auth line" % e
              for e in conn_of if e > len(run.auths)]
    rep.check(not wrong, "connect lines name the server connection their auth answer did",
              wrong)
    bad = [d for d in run.disconnects[:-1] if not 0 <= d[2] <= backoff_max_ms]
    last = run.disconnects[-1:] if run.disconnects else []
    bad += [d for d in last if not (0 <= d[2] <= backoff_max_ms or d[1:] == ("closed", -1))]
    rep.check(not bad, "%d disconnects, every backoff within %d ms" %
              (len(run.disconnects), backoff_max_ms), ["%s" % (d,) for d in bad])
    return conn_of


def check_subs(rep, run, topics):
    """Each connection resubscribed to each topic, from the last seq taken + 1."""
    missing = ["epoch %d: %s sub lines for %s" % (e, len(run.subs.get((e, t), [])), t)
               for e, _, _ in run.connects for t in topics if len(run.subs.get((e, t), [])) != 1]
    rep.check(not missing, "every connection subscribed once to each of %s on its epoch" %
              ",".join(topics), missing)
    wrong = []
    for topic in topics:
        seqs = run.updates.get(topic, [])
        for (epoch, t), froms in sorted(run.subs.items()):
            if t != topic:
                continue
            before = [s for e, s in seqs if e < epoch]
            want = max(before) + 1 if before else None
            if froms[0] != want:
                wrong.append("%s epoch %d: from %s, the last seq taken before it + 1 is %s" %
                             (topic, epoch, froms[0], want))
    rep.check(not wrong, "every sub's from is the last seq taken on its topic + 1 (null before "
              "any)", wrong)


def check_seqs(rep, run, topics, summary):
    """The updates taken rise one by one per topic, over every reconnect."""
    for topic in topics:
        seqs = run.updates.get(topic, [])
        bad = ["epoch %d seq %d after epoch %d seq %d" % (b[0], b[1], a[0], a[1])
               for a, b in zip(seqs, seqs[1:]) if b[1] != a[1] + 1 or b[0] < a[0]]
        span = "%d..%d" % (seqs[0][1], seqs[-1][1]) if seqs else "none"
        rep.check(seqs and not bad, "topic %s: %d updates, seqs %s one by one, no gap" %
                  (topic, len(seqs), span), bad)
        counted = (summary or {}).get("topics", {}).get(topic)
        rep.check(counted is not None and counted[1:] == (0, 0),
                  "topic %s: the client counted no gap and no duplicate" % topic,
                  ["summary (updates, gaps, dups): %s" % (counted,)])


def check_answers(rep, run, conn_of, place):
    """Every ok answer is in the log of the process that served its epoch
    (place), under the epoch's connection, once; unlogged ones are allowed
    once per connection of a killed process."""
    logs = [inst.log for inst in place.instances]
    twice = ["id %d answered again on %s conn %d" % (i, log.path, c)
             for log in logs for i, c in log.answered_twice]
    logged = set()
    for index, log in enumerate(logs):
        again = logged.intersection(log.answers) if index else ()
        twice += ["id %d answered again on %s" % (i, log.path) for i in sorted(again)]
        logged.update(log.answers)
    wrong, unlogged = [], collections.Counter()
    for req_id, packed in run.outcomes.items():
        epoch, kind = divmod(packed, Run.KINDS)
        if kind != 0:  # "ok" is kinds[0]
            continue
        index, conn = place.index_of(epoch), conn_of.get(epoch)
        if index is not None and conn is not None and logs[index].answers.get(req_id) == conn:
            continue
        if req_id not in logged and index is not None and logs[index].killed:
            unlogged[epoch] += 1
            continue
        got = ["process %d conn %d" % (i, log.answers[req_id])
               for i, log in enumerate(logs) if req_id in log.answers]
        wrong.append("id %d ok on epoch %d (process %s, conn %s); the log answers it on %s" %
                     (req_id, epoch, index, conn, ", ".join(got) or "nothing"))
    rep.check(not wrong, "every ok answer is in the server's log, on its epoch's connection",
              wrong)
    rep.check(not twice, "no id answered twice in the server's log(s)", twice)
    many = ["epoch %d: %d ok answers not logged" % (e, n) for e, n in unlogged.items() if n > 1]
    rep.check(not many, "ok answers missing from a killed server's log: %d (at most one per "
              "connection)" % sum(unlogged.values()), many)
    strangers = sorted(i for i in logged if i not in run.sends)
    rep.check(not strangers, "the log answers no id the client did not send",
              ["id %d" % i for i in strangers])


def check_logs(rep, instances):
    bad, lines = [], 0
    for inst in instances:
        lines += inst.log.lines
        bad += inst.log.bad
        if inst.kill_t is None:
            bad += ["%s: conn %d has no drop or close" % (inst.log.path, c)
                    for c in inst.log.unended()]
    rep.check(not bad, "%d server log lines in %d file(s), each documented and in order "
              "(open, auth, answers, drop or close)" % (lines, len(instances)), bad)


class Placement:
    """Which server process served which epoch: all one without the kill
    loop; else the process alive when the epoch's auth answer came."""

    def __init__(self, instances, run):
        self.instances = instances
        self.where = {}
        if len(instances) == 1 and instances[0].kill_t is None:
            self.where = {k: 0 for k in range(1, len(run.auths) + 1)}
        else:
            for k, (_, t, _) in enumerate(run.auths, 1):
                for index, inst in enumerate(instances):
                    if inst.launch_t <= t and (inst.kill_t is None or t <= inst.kill_t):
                        self.where[k] = index
        for epoch, index in self.where.items():
            instances[index].epochs.append(epoch)

    def index_of(self, epoch):
        return self.where.get(epoch)


def check_restarts(rep, run, place, bound_s):
    """Each process got a connection, the first one within bound_s of it
    listening. Returns the delays of the restarts."""
    connect_t = {e: t for e, t, _ in run.connects}
    delays, bad = [], []
    for index, inst in enumerate(place.instances):
        through = [e for e in inst.epochs if e in connect_t]
        if not through:
            bad.append("process %d (listening at %.3f): no connection" % (index, inst.listen_t))
            continue
        delay = max(0.0, connect_t[through[0]] - inst.listen_t)
        if index > 0:
            delays.append(delay)
        if delay > bound_s:
            bad.append("process %d: connected %.3f s after listening (epoch %d)" %
                       (index, delay, through[0]))
    rep.check(not bad, "%d restarts, each reconnected to within %.1f s (max %.3f s)" %
              (len(place.instances) - 1, bound_s, max(delays or [0])), bad)
    return delays


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--status", type=int, required=True)
    ap.add_argument("--topics", required=True)
    ap.add_argument("--backoff-max-ms", type=int, required=True)
    ap.add_argument("--log")
    ap.add_argument("--instances")
    ap.add_argument("--bound-s", type=float, default=2.0)
    ap.add_argument("--min-reconnects", type=int, default=0)
    ap.add_argument("--seqs", action="store_true")
    args = ap.parse_args()
    if bool(args.log) == bool(args.instances):
        ap.error("one of --log and --instances")
    rep = Report(args.label)
    topics = args.topics.split(",")
    run, summary = read_run(args.client), read_summary(args.summary)
    if args.log:
        instances = [Instance(float("-inf"), None, None, read_log(args.log, False))]
    else:
        instances = read_instances(args.instances)
    counts = check_resolved(rep, run, args.status, summary)
    conn_of = check_connections(rep, run, args.min_reconnects, args.backoff_max_ms)
    check_subs(rep, run, topics)
    if args.seqs:
        check_seqs(rep, run, topics, summary)
    place = Placement(instances, run)
    check_logs(rep, instances)
    check_answers(rep, run, conn_of, place)
    delays = check_restarts(rep, run, place, args.bound_s) if args.instances else []
    figures = ("requests %d ok %d failed disconnected %d timeout %d; reconnects %d; updates %s" %
               (len(run.sends), counts["ok"], counts["disconnected"], counts["timeout"],
                max(0, len(run.connects) - 1),
                " ".join("%s %d" % (t, len(run.updates.get(t, []))) for t in topics)))
    if args.instances:
        figures += "; restarts %d, reconnect after restart max %.3f s mean %.3f s" % (
            len(delays), max(delays or [0]), sum(delays) / len(delays) if delays else 0)
    print("figures %s: %s" % (args.label, figures))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""weft's gdb extension: the fibers of a weft runtime and their stacks, in a
live process or a core file.

    (gdb) source /usr/local/share/weft/gdb/weft_gdb.py
    (gdb) weft fibers            one line per fiber of the running runtime
    (gdb) weft bt FIBER [ARGS]   that fiber's backtrace (ARGS go to `bt`: full, 5, ...)
    (gdb) weft frame FIBER       select its innermost frame outside the runtime,
                                 for `info locals`, `up`, `print`, `bt`
    (gdb) weft frame off         back to the thread's own frames

FIBER is a fiber id or a fiber's name. The library needs its debug
information (the runtime's types are read from it, so the extension follows
their layout; only the saved register frame is read by offset).

How a parked fiber's stack is shown. A parked fiber has no thread: its
registers are in the frame weft_switch pushed on its stack
(runtime/src/switch_x86_64.S). The usual trick (brpc's bthread script) sets
the selected thread's $rsp, $rip and callee-saved registers to that frame,
runs `bt` and puts them back; but gdb cannot write registers in a core file
("You can't do that without a process to debug"), and a live process would
be left with wrong registers if the commands between were interrupted.
Instead a Python unwinder (gdb.unwinder) says that the caller of the
selected thread's innermost frame is the fiber's frame: gdb then unwinds the
fiber's stack with the CFI of its own frames, the same way in a live process
and in a core, and nothing in the inferior changes. A frame filter hides
that one borrowed frame (#0, the thread's own) from `bt`, so a fiber's
backtrace starts at #1. While a view is on (during `weft bt`, or from
`weft frame` until `weft frame off` or the program runs again), only the
thread selected when it was made sees it.
"""

import itertools
import re

import gdb
import gdb.unwinder

# ---- reading the runtime's data -------------------------------------------------------


class WeftError(gdb.GdbError):
    pass


def _unwrap(value, want):
    """The first field of `value`, depth first through its bases and members,
    for which want(field value) holds: the pointer or integer inside a
    std::atomic, a std::unique_ptr or a std::thread::id, whatever the
    standard library calls its members."""
    if want(value):
        return value
    t = value.type.strip_typedefs()
    if t.code not in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        return None
    for field in t.fields():
        # Static members (std::atomic's _S_alignment) have no bitpos and
        # are not the value.
        if not hasattr(field, "bitpos"):
            continue
        if field.is_base_class or field.name:
            try:
                inner = value.cast(field.type) if field.is_base_class else value[field.name]
            except gdb.error:
                continue
            found = _unwrap(inner, want)
            if found is not None:
                return found
    return None


def _scalar(value):
    """What a std::atomic<T> (or any wrapper of one scalar) holds."""
    codes = (gdb.TYPE_CODE_PTR, gdb.TYPE_CODE_INT, gdb.TYPE_CODE_BOOL, gdb.TYPE_CODE_ENUM)
    found = _unwrap(value, lambda v: v.type.strip_typedefs().code in codes)
    if found is None:
        raise WeftError("weft: cannot read a %s" % value.type)
    return found


def _pointer_to(value, type_name):
    """The T* inside a std::unique_ptr<T> (or T* itself)."""

    def is_it(v):
        t = v.type.strip_typedefs()
        return t.code == gdb.TYPE_CODE_PTR and t.target().strip_typedefs().name == type_name

    found = _unwrap(value, is_it)
    if found is None:
        raise WeftError("weft: no %s* in a %s" % (type_name, value.type))
    return found


def _vector(value):
    """The elements of a std::vector (libstdc++'s layout: _M_start.._M_finish)."""
    impl = value["_M_impl"]
    start, finish = impl["_M_start"], impl["_M_finish"]
    return [(start + i).dereference() for i in range(int(finish - start))]


def _enum_name(value):
    # "weft::detail::WaitReason::chan_receive" -> "chan_receive"
    return str(value).rsplit("::", 1)[-1]


def _global(expr):
    try:
        return gdb.parse_and_eval(expr)
    except gdb.error as e:
        raise WeftError(
            "weft: cannot read %s (%s); is libweft loaded, with its debug information?" % (expr, e)
        )


def _string(pointer):
    if int(pointer) == 0:
        return ""
    try:
        # Up to the NUL (a length would read past it), at most 256 bytes.
        return pointer.string(errors="replace")[:256]
    except (gdb.error, gdb.MemoryError, ValueError):
        return "?"


# wait_reason_text in runtime/src/registry.cc, by enumerator name; a reason
# added there and not here shows as its enumerator.
WAIT_REASON_TEXT = {
    "unknown": "parked",
    "chan_send": "chan send",
    "chan_receive": "chan receive",
    "chan_receive_nil": "chan receive (nil chan)",
    "select": "select",
    "select_no_cases": "select (no cases)",
    "mutex_lock": "Mutex.lock",
    "cond_wait": "CondVar.wait",
    "wait_group": "WaitGroup.wait",
    "sleep": "sleep",
    "io_read": "IO wait (read)",
    "io_write": "IO wait (write)",
    "blocking": "blocking call",
    "context_done": "context done",
    "rwmutex_lock": "RWMutex.lock",
    "rwmutex_lock_shared": "RWMutex.lock_shared",
    "semaphore_acquire": "Semaphore.acquire",
}

# The most records the registry walk follows before it calls the list corrupt
# (a core from a process that died mid-update, or a wrong symbol).
MAX_RECORDS = 1 << 22


class FiberInfo:
    """One fiber of the running runtime, classified as dump.cc does."""

    def __init__(self, fiber, shown, worker):
        self.fiber = fiber  # a weft::detail::Fiber value
        self.id = int(fiber["id"])
        self.name = _string(fiber["name"])
        self.shown = shown  # "running", "runnable", "parked"
        self.worker = worker  # index of the worker running it, or None
        self.state = _enum_name(fiber["state"])
        self.reason = _enum_name(fiber["wait_reason"])
        self.detail = int(fiber["wait_detail"])
        self.since_ms = int(fiber["parked_since_ms"])

    def reason_text(self):
        if self.shown == "running":
            return "running on worker %d" % self.worker
        if self.shown == "runnable":
            return "runnable" if self.state != "fresh" else "runnable (not started)"
        return WAIT_REASON_TEXT.get(self.reason, self.reason)

    def spawn_site(self):
        try:
            line = int(self.fiber["site_line"])
            if line == 0:
                return ""
            return "%s:%d" % (_string(self.fiber["site_file"]), line)
        except gdb.error:
            return ""


class Runtime:
    """The running runtime (weft::detail::g_sched) as the inferior has it now."""

    def __init__(self):
        sched = _scalar(_global("'weft::detail::g_sched'"))
        if int(sched) == 0:
            raise WeftError("weft: no runtime is running (weft::detail::g_sched is null)")
        self.sched = sched.dereference()
        self.gen = int(self.sched["gen"])
        self.workers = [_pointer_to(w, "weft::detail::Worker").dereference()
                        for w in _vector(self.sched["workers"])]

    def running(self):
        """fiber address -> worker index, for the workers running a fiber."""
        out = {}
        for w in self.workers:
            current = w["current"]
            if int(current) != 0:
                out[int(current)] = int(w["index"])
        return out

    def queued(self):
        """The addresses of the fibers in a run queue (runnext, each worker's
        ring and pinned lists, the global queue's chunks)."""
        out = set()
        for w in self.workers:
            out.add(int(_scalar(w["runnext"])))
            # Pinned fibers: the worker's own FIFO and the inbox others
            # push to, both linked through Fiber::next.
            for head in (w["pinned_head"], _scalar(w["pinned_inbox"])):
                f, hops = head, 0
                while int(f) != 0 and hops < MAX_RECORDS:
                    out.add(int(f))
                    f = f.dereference()["next"]
                    hops += 1
            q = w["runq"]
            slots = q["slots_"]
            size = slots.type.strip_typedefs().range()[1] + 1
            head, tail = int(_scalar(q["head_"])), int(_scalar(q["tail_"]))
            n = (tail - head) & 0xFFFFFFFF
            if n <= size:  # else torn or corrupt: as dump.cc, skip it
                for i in range(n):
                    out.add(int(_scalar(slots[(head + i) % size])))
        chunk = self.sched["gq"]["head_"]
        hops = 0
        while int(chunk) != 0 and hops < MAX_RECORDS:
            c = chunk.dereference()
            for i in range(int(c["begin"]), int(c["end"])):
                out.add(int(c["fibers"][i]))
            chunk = c["next"]
            hops += 1
        out.discard(0)
        return out

    def fibers(self):
        """Every fiber of this runtime that is running, queued, or parked."""
        # A function's static: gdb finds it through the ELF symbol table, with
        # no type, so it is read as the FiberRegistry* it is declared as.
        registry_type = gdb.lookup_type("weft::detail::FiberRegistry").pointer()
        registry = _global("&'weft::detail::fiber_registry()::registry'").cast(
            registry_type.pointer()).dereference()
        if int(registry) == 0:
            return []
        head = registry.dereference()["head_"]
        head_addr = int(head.address)
        running, queued = self.running(), self.queued()
        out = []
        link = head["next"]
        for _ in range(MAX_RECORDS):
            if int(link) in (0, head_addr):
                break
            f = link.dereference()["fiber"]
            link = link.dereference()["next"]
            if int(f) == 0:
                continue
            fiber = f.dereference()
            # run_gen's top bit marks a pinned fiber (kPinnedBit in fiber.h).
            if (int(fiber["run_gen"]) & 0x7FFFFFFF) != self.gen or bool(fiber["is_thread"]):
                continue
            addr = int(f)
            state = _enum_name(fiber["state"])
            if addr in running:
                out.append(FiberInfo(fiber, "running", running[addr]))
            elif addr in queued or state == "yielded":
                out.append(FiberInfo(fiber, "runnable", None))
            elif state == "parked":
                out.append(FiberInfo(fiber, "parked", None))
            # else ended (or spawned and not queued yet): not listed, as in dumps
        else:
            gdb.write("weft: the registry has over %d records; listing stops there\n" % MAX_RECORDS)
        out.sort(key=lambda fi: fi.id)
        return out

    def find(self, spec):
        fibers = self.fibers()
        if re.fullmatch(r"\d+", spec):
            match = [f for f in fibers if f.id == int(spec)]
        else:
            match = [f for f in fibers if f.name == spec]
        if not match:
            raise WeftError("weft: no fiber %s in the running runtime (see `weft fibers`)" % spec)
        if len(match) > 1:
            raise WeftError("weft: %d fibers are named %s: ids %s" %
                            (len(match), spec, ", ".join(str(f.id) for f in match)))
        return match[0]

    def thread_of(self, worker_index):
        """The gdb thread of a worker, matched by its pthread_t (std::thread's
        id), or None."""
        for w in self.workers:
            if int(w["index"]) != worker_index:
                continue
            try:
                want = int(_scalar(w["thread"]))
            except (gdb.error, WeftError):
                return None
            for th in gdb.selected_inferior().threads():
                try:
                    if int.from_bytes(th.handle(), "little") == want:
                        return th
                except (gdb.error, AttributeError):
                    return None
        return None


def _coarse_now_ms():
    try:
        return int(_scalar(gdb.parse_and_eval("'weft::detail::(anonymous namespace)::g_coarse_ms'")))
    except (gdb.error, WeftError):
        return None


def _duration_text(ms):
    if ms < 1000:
        return "%d ms" % ms
    if ms < 120000:
        return "%.1f s" % (ms / 1000.0)
    return "%d minutes" % (ms // 60000)


# ---- the fiber view: an unwinder that hands frame #0's caller to a fiber -------------

# The frame weft_switch leaves at a parked fiber's sp (switch_x86_64.S, low
# to high): mxcsr and x87 control word, r15, r14, r13, r12, rbx, rbp, return
# address; the fiber's rsp after that return is sp + 64.
X86_64_SAVED = (("r15", 8), ("r14", 16), ("r13", 24), ("r12", 32), ("rbx", 40), ("rbp", 48),
                ("rip", 56))
X86_64_FRAME_SIZE = 64


class _View:
    def __init__(self, thread_num, fiber_id, sp, regs):
        self.thread_num = thread_num  # gdb's global thread number that sees it
        self.fiber_id = fiber_id
        self.sp = sp
        self.regs = regs  # register name -> value in the fiber's innermost frame


class _State:
    view = None


def _view_applies():
    v = _State.view
    th = gdb.selected_thread()
    return v is not None and th is not None and th.global_num == v.thread_num


class _FrameId:
    # What create_unwind_info reads (gdb.unwinder.FrameId is gdb 14's); gdb
    # 13 takes only gdb.Value attributes, not Python ints.
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class FiberUnwinder(gdb.unwinder.Unwinder):
    def __init__(self):
        super().__init__("weft-fiber")

    def __call__(self, pending_frame):
        if pending_frame.level() != 0 or not _view_applies():
            return None
        v = _State.view
        # Frame #0's id keeps its pc, with the fiber's saved sp as its stack
        # address: below the fiber's frames, so that gdb's check that each
        # caller is outer to its callee holds wherever the fiber's stack
        # lies relative to the thread's.
        u64 = gdb.lookup_type("unsigned long")
        pc = pending_frame.read_register("rip")
        info = pending_frame.create_unwind_info(_FrameId(gdb.Value(v.sp).cast(u64), pc))
        for name, value in v.regs.items():
            info.add_saved_register(name, gdb.Value(value).cast(u64))
        return info


class HideThreadFrame:
    """Frame filter: while a fiber view is on, `bt` leaves out frame #0, the
    thread's own frame that the view borrows."""

    def __init__(self):
        self.name = "weft-fiber-view"
        self.priority = 100
        self.enabled = True

    def filter(self, frames):
        if not _view_applies():
            return frames
        return itertools.islice(frames, 1, None)


def _check_arch():
    arch = gdb.selected_inferior().architecture().name()
    if "x86-64" not in arch:
        raise WeftError("weft: walking a parked fiber's stack is written for x86-64 only, not %s"
                        % arch)


def _view_of(fi):
    """A view of parked or runnable fiber `fi`, or an error saying why it has
    no saved stack."""
    _check_arch()
    f = fi.fiber
    if fi.state == "fresh":
        raise WeftError("weft: fiber %d has not started: it has no stack yet" % fi.id)
    if bool(f["stack"]["given_back"]):
        # Its pages went back to the kernel while it waited on a socket
        # (runtime/src/idle_stack.h); its frames are kept aside, not at sp.
        raise WeftError("weft: fiber %d's stack was given back while it was idle (it comes "
                        "back when the fiber runs, or in a fiber dump): not walked" % fi.id)
    sp = int(f["sp"])
    lo = int(f["stack"]["lo"])
    hi = lo + int(f["stack"]["size"])
    if sp == 0 or not lo <= sp <= hi - X86_64_FRAME_SIZE:
        raise WeftError("weft: fiber %d's saved stack pointer %#x is not on its stack [%#x, %#x)"
                        % (fi.id, sp, lo, hi))
    raw = bytes(gdb.selected_inferior().read_memory(sp, X86_64_FRAME_SIZE))
    regs = {name: int.from_bytes(raw[off:off + 8], "little") for name, off in X86_64_SAVED}
    regs["rsp"] = sp + X86_64_FRAME_SIZE
    th = gdb.selected_thread()
    if th is None:
        raise WeftError("weft: no thread selected")
    return _View(th.global_num, fi.id, sp, regs)


def _set_view(view):
    _State.view = view
    gdb.invalidate_cached_frames()


def _on_resume(_event):
    # The inferior runs on: the fiber may run, and its saved frame with it.
    _State.view = None


# The library's frames (its park path, and the API call that parked: Channel
# ::recv, Mutex::lock, sleep_until), which `weft frame` steps over to reach
# the code that waits.
RUNTIME_FRAME = re.compile(r"^(weft::|weft_)")


def _innermost_user_frame():
    frame = gdb.newest_frame().older()  # #1: the fiber's innermost
    first = frame
    while frame is not None:
        name = frame.name() or ""
        if not RUNTIME_FRAME.match(name):
            return frame
        frame = frame.older()
    return first


# ---- commands -----------------------------------------------------------------------


class WeftPrefix(gdb.Command):
    """weft runtime commands: weft fibers, weft bt FIBER, weft frame FIBER|off."""

    def __init__(self):
        super().__init__("weft", gdb.COMMAND_STACK, prefix=True)


class WeftFibers(gdb.Command):
    """List the fibers of the running weft runtime: id, name, what it does (its
    wait reason, the fd it waits on, or the worker and thread running it),
    and where it was spawned. The fibers a fiber dump would list: running,
    runnable, parked (not ended ones)."""

    def __init__(self):
        super().__init__("weft fibers", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        rt = Runtime()
        fibers = rt.fibers()
        now = _coarse_now_ms()
        counts = {s: sum(f.shown == s for f in fibers) for s in ("running", "runnable", "parked")}
        gdb.write("weft: %d fibers: %d running, %d runnable, %d parked\n" %
                  (len(fibers), counts["running"], counts["runnable"], counts["parked"]))
        if not fibers:
            return
        rows = []
        for f in fibers:
            what = f.reason_text()
            if f.shown == "parked":
                if f.reason in ("io_read", "io_write"):
                    what += ", fd %d" % f.detail
                if f.since_ms and now is not None and now >= f.since_ms:
                    what += ", " + _duration_text(now - f.since_ms)
            elif f.shown == "running":
                th = rt.thread_of(f.worker)
                if th is not None:
                    what += " (thread %d, LWP %d)" % (th.num, th.ptid[1])
            mark = "*" if _State.view and _State.view.fiber_id == f.id else " "
            rows.append((mark, str(f.id), f.name, what, f.spawn_site()))
        w_id = max(len(r[1]) for r in rows + [(" ", "Id")])
        w_name = max(len(r[2]) for r in rows + [(" ", "", "Name")])
        w_what = max(len(r[3]) for r in rows + [(" ", "", "", "State")])
        gdb.write("  %*s  %-*s  %-*s  %s\n" % (w_id, "Id", w_name, "Name", w_what, "State",
                                               "Spawned at"))
        for mark, fid, name, what, site in rows:
            gdb.write("%s %*s  %-*s  %-*s  %s\n" % (mark, w_id, fid, w_name, name, w_what, what,
                                                    site))


def _parse_fiber_arg(arg, command):
    args = gdb.string_to_argv(arg)
    if not args:
        raise WeftError("usage: weft %s FIBER (an id or a name; see `weft fibers`)" % command)
    return args[0], args[1:]


class WeftBt(gdb.Command):
    """Backtrace of a fiber: weft bt FIBER [BT-ARGS]. FIBER is an id or a name
    (see `weft fibers`); BT-ARGS go to `bt` (full, a count, -frame-arguments
    all, ...). A parked or runnable fiber's stack is unwound from the frame
    it saved when it switched away; a running fiber's is its worker
    thread's."""

    def __init__(self):
        super().__init__("weft bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        spec, rest = _parse_fiber_arg(arg, "bt")
        rt = Runtime()
        fi = rt.find(spec)
        bt = " ".join(["bt"] + rest)
        label = 'fiber %d%s [%s]' % (fi.id, ' "%s"' % fi.name if fi.name else "",
                                     fi.reason_text())
        if fi.shown == "running":
            th = rt.thread_of(fi.worker)
            if th is None:
                raise WeftError("weft: %s: no gdb thread matches worker %d" % (label, fi.worker))
            gdb.write("%s: on thread %d\n" % (label, th.num))
            gdb.execute("thread apply %d %s" % (th.num, bt))
            return
        view = _view_of(fi)
        previous = _State.view
        selected = gdb.selected_frame().level()
        gdb.write("%s (its frames from #1; #0 is the thread's own):\n" % label)
        try:
            _set_view(view)
            gdb.execute(bt)
        finally:
            _set_view(previous)
            _select_level(selected)


def _select_level(level):
    frame = gdb.newest_frame()
    for _ in range(level):
        older = frame.older()
        if older is None:
            break
        frame = older
    frame.select()


class WeftFrame(gdb.Command):
    """Select a fiber's innermost frame outside the weft library:
    weft frame FIBER. Then `info locals`, `print`, `up`, `down` and `bt` work
    on the fiber's stack, until `weft frame off`, another `weft frame`, or the
    program runs again. Only the thread selected at `weft frame` sees the
    fiber (its frame #0 stays its own). A running fiber: switches to the
    worker thread that runs it."""

    def __init__(self):
        super().__init__("weft frame", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        spec, _ = _parse_fiber_arg(arg, "frame")
        if spec == "off":
            _set_view(None)
            gdb.execute("frame 0")
            return
        rt = Runtime()
        fi = rt.find(spec)
        if fi.shown == "running":
            th = rt.thread_of(fi.worker)
            if th is None:
                raise WeftError("weft: fiber %d runs on worker %d, which no gdb thread matches"
                                % (fi.id, fi.worker))
            _set_view(None)
            gdb.execute("thread %d" % th.num)
            return
        view = _view_of(fi)
        _set_view(view)
        try:
            _innermost_user_frame().select()
        except Exception:
            _set_view(None)
            raise
        gdb.write('fiber %d%s [%s]; `weft frame off` to leave\n' %
                  (fi.id, ' "%s"' % fi.name if fi.name else "", fi.reason_text()))
        gdb.execute("frame")


def _register():
    WeftPrefix()
    WeftFibers()
    WeftBt()
    WeftFrame()
    # replace=True: sourcing the file again (or auto-load and `source` both)
    # swaps in the new unwinder instead of failing.
    gdb.unwinder.register_unwinder(None, FiberUnwinder(), replace=True)
    gdb.frame_filters["weft-fiber-view"] = HideThreadFrame()
    # One handler however often the file is sourced: the previous one is
    # kept on the gdb module and disconnected.
    old = getattr(gdb, "_weft_on_resume", None)
    if old is not None:
        gdb.events.cont.disconnect(old)
    gdb.events.cont.connect(_on_resume)
    gdb._weft_on_resume = _on_resume


_register()

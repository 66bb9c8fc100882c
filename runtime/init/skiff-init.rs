//! skiff-init: PID 1 of every skiff container. Built by runtime/build.rs as a small static
//! binary (no crates, no Rust runtime start-up) and exec'd by the container's setup process
//! once the workload has been forked, so that what stays resident per container is tiny.
//!
//! It reaps zombies, forwards signals to the workload, copies the workload's stdout/stderr
//! into a CRI-format log file (`<RFC3339Nano> stdout|stderr F|P <line>`, rotated by size),
//! and records the workload's exit status and time in the container's state directory, so a
//! daemon that was down when the workload exited still learns how it ended.
//!
//! It also serves `kubectl attach` (docs/design/013): clients connect to the container's
//! attach socket (`STATE_DIR/attach`, SOCK_SEQPACKET, bound by the setup process) and get a
//! copy of the output from then on; their input goes to the workload's stdin (a pipe, or the
//! pty). Messages are one kind byte and a payload: 0 stdin, 1 stdout, 2 stderr, 4 resize
//! (width, height: u16 little-endian), 255 close stdin. Init never blocks on a client: one
//! that cannot take output at once is disconnected, and input waits in a buffer of at most a
//! message per client while the workload does not read.
//!
//! Interface (set up by the runtime before exec):
//!   argv: skiff-init WORKLOAD_PID LOG_NAME LOG_MAX_BYTES [FLAGS: `t` tty, `i` stdin]
//!   fd 3: the container state directory (O_PATH)   fd 4: workload stdout (read end of a
//!         pipe), or the pty master with `t`
//!   fd 5: workload stderr (read end of a pipe)      fd 6: the log directory (O_PATH)
//!   fd 7: the runtime's status pipe: `ready` is written there once signals are caught, so
//!         nothing the runtime sends after `create` returns can be lost
//!   fd 8: the attach socket, listening (absent: no attach)
//!   fd 9: the write end of the workload's stdin pipe (with `i` and without `t`)
#![no_main]
#![allow(non_camel_case_types)]

use std::ffi::CStr;

type c_int = i32;
type pid_t = i32;

const STATE_DIR: c_int = 3;
const STDOUT_PIPE: c_int = 4;
const STDERR_PIPE: c_int = 5;
const LOG_DIR: c_int = 6;
const STATUS_PIPE: c_int = 7;
const ATTACH_SOCKET: c_int = 8;
const STDIN_PIPE: c_int = 9;

/// Attach clients served at once; more are turned away.
const MAX_CLIENTS: usize = 8;
/// The largest attach message: a kind byte and 8 KiB.
const MAX_MESSAGE: usize = 8192 + 1;
const MSG_STDIN: u8 = 0;
const MSG_STDOUT: u8 = 1;
const MSG_STDERR: u8 = 2;
const MSG_RESIZE: u8 = 4;
const MSG_CLOSE_STDIN: u8 = 255;

const SIG_BLOCK: c_int = 0;
const SIGCHLD: c_int = 17;
const FORWARDED: [c_int; 9] = [1, 2, 3, 10, 12, 15, 18, 28, 14]; // HUP INT QUIT USR1 USR2 TERM CONT WINCH ALRM
const WNOHANG: c_int = 1;
const POLLIN: i16 = 1;
const POLLOUT: i16 = 4;
const POLLHUP: i16 = 0x10;
const POLLERR: i16 = 0x8;
const O_WRONLY: c_int = 1;
const O_CREAT: c_int = 0o100;
const O_TRUNC: c_int = 0o1000;
const O_APPEND: c_int = 0o2000;
const O_CLOEXEC: c_int = 0o2000000;
const SFD_CLOEXEC: c_int = O_CLOEXEC;
const CLOCK_REALTIME: c_int = 0;
const EINTR: c_int = 4;
const EAGAIN: c_int = 11;
const O_NONBLOCK: c_int = 0o4000;
const F_GETFL: c_int = 3;
const F_SETFL: c_int = 4;
const MSG_DONTWAIT: c_int = 0x40;
const MSG_NOSIGNAL: c_int = 0x4000;
const TIOCSWINSZ: u64 = 0x5414;
const SIGPIPE: c_int = 13;
const SIG_IGN: usize = 1;
const SYS_SIGNALFD4: i64 = 289;
/// A partial line longer than this is written as a `P` record.
const MAX_LINE: usize = 16 * 1024;

#[repr(C)]
struct sigset_t {
    bits: [u64; 16],
}

#[repr(C)]
struct pollfd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

#[repr(C)]
struct stat_t {
    pad0: [u64; 6],
    st_size: i64,
    pad1: [u64; 11],
}

#[repr(C)]
struct signalfd_siginfo {
    ssi_signo: u32,
    rest: [u8; 124],
}

unsafe extern "C" {
    fn sigemptyset(set: *mut sigset_t) -> c_int;
    fn sigaddset(set: *mut sigset_t, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int;
    fn syscall(nr: i64, ...) -> i64;
    fn poll(fds: *mut pollfd, n: u64, timeout: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut u8, n: usize) -> isize;
    fn write(fd: c_int, buf: *const u8, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn openat(dirfd: c_int, path: *const u8, flags: c_int, mode: u32) -> c_int;
    fn renameat(olddirfd: c_int, old: *const u8, newdirfd: c_int, new: *const u8) -> c_int;
    fn fstat(fd: c_int, st: *mut stat_t) -> c_int;
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    fn kill(pid: pid_t, sig: c_int) -> c_int;
    fn clock_gettime(clock: c_int, ts: *mut timespec) -> c_int;
    fn __errno_location() -> *mut c_int;
    fn _exit(code: c_int) -> !;
    fn umount2(target: *const u8, flags: c_int) -> c_int;
    fn unlink(path: *const u8) -> c_int;
    fn accept4(fd: c_int, addr: *mut u8, len: *mut u32, flags: c_int) -> c_int;
    fn send(fd: c_int, buf: *const u8, n: usize, flags: c_int) -> isize;
    fn recv(fd: c_int, buf: *mut u8, n: usize, flags: c_int) -> isize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn ioctl(fd: c_int, request: u64, ...) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
}

#[repr(C)]
struct winsize {
    rows: u16,
    cols: u16,
    xpixel: u16,
    ypixel: u16,
}

const MNT_DETACH: c_int = 2;
/// Where the runtime bound this binary so it could be exec'd; removed once running.
const SELF_IN_CONTAINER: &[u8] = b"/dev/.skiff-init\0";

/// One output stream of the workload, line-buffered into the log.
struct Stream {
    fd: c_int,
    name: &'static [u8],
    /// Its attach message kind.
    kind: u8,
    partial: Vec<u8>,
    open: bool,
}

struct Log {
    fd: c_int,
    name: Vec<u8>,
    rotated: Vec<u8>,
    max: i64,
}

#[unsafe(no_mangle)]
pub extern "C" fn main(argc: c_int, argv: *const *const u8) -> c_int {
    let arg = |i: isize| -> &[u8] {
        if i >= argc as isize {
            return b"";
        }
        // SAFETY: argv has argc valid NUL-terminated strings, as the C runtime guarantees.
        unsafe { CStr::from_ptr(*argv.offset(i) as *const _).to_bytes() }
    };
    // SAFETY: NUL-terminated path; failure only leaves the (read-only) bind in place.
    unsafe {
        umount2(SELF_IN_CONTAINER.as_ptr(), MNT_DETACH);
        unlink(SELF_IN_CONTAINER.as_ptr());
    }
    let workload = parse_int(arg(1)) as pid_t;
    let mut log = Log {
        fd: -1,
        name: [arg(2), b"\0"].concat(),
        rotated: [arg(2), b".1\0"].concat(),
        max: parse_int(arg(3)).max(4096),
    };
    log.fd = open_log(&log.name, false);
    let flags = arg(4);
    let tty = flags.contains(&b't');
    let stdin = flags.contains(&b'i');
    // SAFETY: ignoring SIGPIPE: a workload that closed its stdin makes writes fail with EPIPE.
    unsafe { signal(SIGPIPE, SIG_IGN) };
    let sfd = block_signals();
    let mut exit_code: Option<c_int> = None;
    // The workload may have ended before the signals were blocked: its SIGCHLD is gone, so reap.
    reap(workload, &mut exit_code);
    write_all(STATUS_PIPE, b"ready\n");
    // SAFETY: closing the status pipe, which nothing else here uses.
    unsafe { close(STATUS_PIPE) };
    let mut streams = [
        Stream { fd: STDOUT_PIPE, name: b"stdout", kind: MSG_STDOUT, partial: Vec::new(), open: true },
        Stream { fd: STDERR_PIPE, name: b"stderr", kind: MSG_STDERR, partial: Vec::new(), open: true },
    ];
    let input = match (tty, stdin) {
        (true, true) => STDOUT_PIPE,
        (false, true) => STDIN_PIPE,
        _ => -1,
    };
    let mut attach = Attach {
        listener: if is_open(ATTACH_SOCKET) { ATTACH_SOCKET } else { -1 },
        clients: [-1; MAX_CLIENTS],
        input: if input >= 0 && is_open(input) { set_nonblocking(input) } else { -1 },
        input_is_tty: tty,
        tty: if tty { STDOUT_PIPE } else { -1 },
        pending: Vec::new(),
    };
    loop {
        let mut fds = [const { pollfd { fd: -1, events: POLLIN, revents: 0 } }; 5 + MAX_CLIENTS];
        fds[0].fd = sfd;
        fds[1].fd = if streams[0].open { STDOUT_PIPE } else { -1 };
        fds[2].fd = if streams[1].open { STDERR_PIPE } else { -1 };
        fds[3].fd = attach.listener;
        if !attach.pending.is_empty() {
            fds[4] = pollfd { fd: attach.input, events: POLLOUT, revents: 0 };
        }
        for (slot, &client) in fds[5..].iter_mut().zip(attach.clients.iter()) {
            // While input waits for the workload, clients are not read: they wait too.
            slot.fd = if attach.pending.is_empty() { client } else { -1 };
        }
        // Once the workload is gone, drain what is buffered and stop: a grandchild holding the
        // pipes open must not keep the container alive (our exit kills it).
        let timeout = if exit_code.is_some() { 0 } else { -1 };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { poll(fds.as_mut_ptr(), fds.len() as u64, timeout) };
        if n < 0 && errno() != EINTR {
            break;
        }
        if fds[0].revents & POLLIN != 0 {
            handle_signals(sfd, workload, &mut exit_code);
        }
        if fds[3].revents & POLLIN != 0 {
            attach.accept();
        }
        if fds[4].revents != 0 {
            attach.flush_input();
        }
        for i in 0..MAX_CLIENTS {
            if fds[5 + i].revents != 0 {
                attach.serve_client(i);
            }
        }
        let mut progressed = false;
        for (i, stream) in streams.iter_mut().enumerate() {
            if fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR) != 0 {
                progressed |= pump(stream, &mut log, &mut attach);
            }
        }
        if let Some(code) = exit_code {
            if !progressed || streams.iter().all(|s| !s.open) {
                for stream in streams.iter_mut() {
                    flush_partial(stream, &mut log);
                }
                // SAFETY: plain process exit; the kernel then kills what is left in the pid ns.
                unsafe { _exit(code) }
            }
        }
    }
    // SAFETY: plain process exit.
    unsafe { _exit(exit_code.unwrap_or(255)) }
}

/// The attach clients and the workload's input.
struct Attach {
    listener: c_int,
    clients: [c_int; MAX_CLIENTS],
    /// Where input goes (the stdin pipe, or the pty master); -1 when there is none.
    input: c_int,
    input_is_tty: bool,
    /// The pty master, for resizes; -1 without a tty.
    tty: c_int,
    /// Input the workload has not taken yet.
    pending: Vec<u8>,
}

impl Attach {
    fn accept(&mut self) {
        // SAFETY: accepting on our listening socket; no peer address is asked for.
        let fd = unsafe { accept4(self.listener, std::ptr::null_mut(), std::ptr::null_mut(), O_CLOEXEC | O_NONBLOCK) };
        if fd < 0 {
            return;
        }
        match self.clients.iter_mut().find(|c| **c < 0) {
            Some(slot) => *slot = fd,
            // SAFETY: closing the connection just accepted.
            None => unsafe {
                close(fd);
            },
        }
    }

    fn drop_client(&mut self, i: usize) {
        if self.clients[i] >= 0 {
            // SAFETY: closing a client connection we own.
            unsafe { close(self.clients[i]) };
            self.clients[i] = -1;
        }
    }

    /// Reads one message from client `i` and acts on it.
    fn serve_client(&mut self, i: usize) {
        let mut msg = [0u8; MAX_MESSAGE];
        // SAFETY: receiving into a stack buffer of the given size.
        let n = unsafe { recv(self.clients[i], msg.as_mut_ptr(), msg.len(), MSG_DONTWAIT) };
        if n < 0 && matches!(errno(), EAGAIN | EINTR) {
            return;
        }
        if n <= 0 {
            self.drop_client(i);
            return;
        }
        let msg = &msg[..n as usize];
        match msg[0] {
            MSG_STDIN if self.input >= 0 => {
                self.pending.extend_from_slice(&msg[1..]);
                self.flush_input();
            }
            MSG_RESIZE if self.tty >= 0 && msg.len() >= 5 => {
                let size = winsize {
                    cols: u16::from_le_bytes([msg[1], msg[2]]),
                    rows: u16::from_le_bytes([msg[3], msg[4]]),
                    xpixel: 0,
                    ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
                unsafe { ioctl(self.tty, TIOCSWINSZ, &size as *const winsize) };
            }
            MSG_CLOSE_STDIN => self.close_input(),
            _ => {}
        }
    }

    /// Writes what input it can without blocking.
    fn flush_input(&mut self) {
        while !self.pending.is_empty() && self.input >= 0 {
            // SAFETY: writing from a valid slice.
            let n = unsafe { write(self.input, self.pending.as_ptr(), self.pending.len()) };
            if n > 0 {
                self.pending.drain(..n as usize);
            } else if n < 0 && errno() == EINTR {
                continue;
            } else if n < 0 && errno() == EAGAIN {
                return;
            } else {
                self.close_input();
            }
        }
    }

    /// No more input: the stdin pipe is closed (the workload reads end of file); a pty stays,
    /// as it also carries the output.
    fn close_input(&mut self) {
        if self.input >= 0 && !self.input_is_tty {
            // SAFETY: closing our write end of the stdin pipe.
            unsafe { close(self.input) };
        }
        self.input = -1;
        self.pending = Vec::new();
    }

    /// Sends a message to every client; one that cannot take it now is disconnected.
    fn broadcast(&mut self, msg: &[u8]) {
        for i in 0..MAX_CLIENTS {
            if self.clients[i] < 0 {
                continue;
            }
            // SAFETY: sending from a valid slice; MSG_NOSIGNAL: no SIGPIPE on a closed peer.
            let n = unsafe { send(self.clients[i], msg.as_ptr(), msg.len(), MSG_DONTWAIT | MSG_NOSIGNAL) };
            if n != msg.len() as isize {
                self.drop_client(i);
            }
        }
    }
}

fn is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFL only asks about the fd number.
    unsafe { fcntl(fd, F_GETFL) >= 0 }
}

/// Sets O_NONBLOCK on `fd` (init must never wait on a workload that does not read).
fn set_nonblocking(fd: c_int) -> c_int {
    // SAFETY: fcntl on our own fd, with integer arguments.
    unsafe {
        let flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
    fd
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *__errno_location() }
}

fn parse_int(s: &[u8]) -> i64 {
    s.iter().take_while(|c| c.is_ascii_digit()).fold(0, |n, c| n * 10 + i64::from(c - b'0'))
}

/// Blocks SIGCHLD and the forwarded signals and returns a signalfd for them. Blocked signals
/// reach PID 1 even from the parent pid namespace, where default-handled ones would not.
fn block_signals() -> c_int {
    let mut set = sigset_t { bits: [0; 16] };
    // SAFETY: set is a valid sigset_t; the calls only write to it / the signal mask.
    unsafe {
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGCHLD);
        for sig in FORWARDED {
            sigaddset(&mut set, sig);
        }
        sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut());
        syscall(SYS_SIGNALFD4, -1i64, &set as *const sigset_t, 8u64, SFD_CLOEXEC as i64) as c_int
    }
}

fn handle_signals(sfd: c_int, workload: pid_t, exit_code: &mut Option<c_int>) {
    let mut info = signalfd_siginfo { ssi_signo: 0, rest: [0; 124] };
    // SAFETY: reading one siginfo record into a buffer of exactly its size.
    let n = unsafe { read(sfd, &mut info as *mut _ as *mut u8, 128) };
    if n != 128 {
        return;
    }
    let sig = info.ssi_signo as c_int;
    if sig != SIGCHLD {
        if exit_code.is_none() {
            // SAFETY: sending a signal to our own child.
            unsafe { kill(workload, sig) };
        }
        return;
    }
    reap(workload, exit_code);
}

/// Reaps every exited child; records the workload's end.
fn reap(workload: pid_t, exit_code: &mut Option<c_int>) {
    loop {
        let mut status = 0;
        // SAFETY: reaping any exited child; status is a valid out-pointer.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid <= 0 {
            break;
        }
        if pid == workload {
            let code = record_exit(status);
            *exit_code = Some(code);
        }
    }
}

/// Writes `exit` in the state directory atomically: `code`, `signal`, `finished` (ns since the
/// epoch). Returns the exit code the shell convention gives (128+signal when killed).
fn record_exit(status: c_int) -> c_int {
    let signal = status & 0x7f;
    let code = if signal == 0 { (status >> 8) & 0xff } else { 128 + signal };
    let now = now();
    let mut text = Vec::with_capacity(96);
    text.extend_from_slice(b"code=");
    push_int(&mut text, i64::from(if signal == 0 { code } else { 0 }));
    text.extend_from_slice(b"\nsignal=");
    push_int(&mut text, i64::from(signal));
    text.extend_from_slice(b"\nfinished=");
    push_int(&mut text, now.tv_sec * 1_000_000_000 + now.tv_nsec);
    text.push(b'\n');
    // SAFETY: NUL-terminated names; fds owned by this process.
    unsafe {
        let fd = openat(STATE_DIR, b"exit.tmp\0".as_ptr(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644);
        if fd >= 0 {
            write_all(fd, &text);
            close(fd);
            renameat(STATE_DIR, b"exit.tmp\0".as_ptr(), STATE_DIR, b"exit\0".as_ptr());
        }
    }
    code
}

/// Reads what a pipe (or the pty) has, logs the complete lines and copies the bytes to the
/// attach clients. Returns whether anything was read.
fn pump(stream: &mut Stream, log: &mut Log, attach: &mut Attach) -> bool {
    let mut buf = [0u8; 8193];
    buf[0] = stream.kind;
    // SAFETY: reading into a stack buffer of the given size (after the kind byte).
    let n = unsafe { read(stream.fd, buf[1..].as_mut_ptr(), buf.len() - 1) };
    if n <= 0 {
        if n == 0 || !matches!(errno(), EINTR | EAGAIN) {
            stream.open = false;
            flush_partial(stream, log);
            // SAFETY: closing our own pipe end (or the pty master, whose slave is gone).
            unsafe { close(stream.fd) };
        }
        return false;
    }
    let data = &buf[1..=n as usize];
    attach.broadcast(&buf[..=n as usize]);
    stream.partial.extend_from_slice(data);
    while let Some(pos) = stream.partial.iter().position(|&c| c == b'\n') {
        let line: Vec<u8> = stream.partial.drain(..=pos).collect();
        write_record(log, stream.name, b'F', &line[..line.len() - 1]);
    }
    while stream.partial.len() >= MAX_LINE {
        let piece: Vec<u8> = stream.partial.drain(..MAX_LINE).collect();
        write_record(log, stream.name, b'P', &piece);
    }
    true
}

fn flush_partial(stream: &mut Stream, log: &mut Log) {
    if !stream.partial.is_empty() {
        let rest = std::mem::take(&mut stream.partial);
        write_record(log, stream.name, b'F', &rest);
    }
}

fn write_record(log: &mut Log, stream: &[u8], tag: u8, line: &[u8]) {
    let mut record = Vec::with_capacity(line.len() + 48);
    push_rfc3339_nano(&mut record, now());
    record.push(b' ');
    record.extend_from_slice(stream);
    record.push(b' ');
    record.push(tag);
    record.push(b' ');
    record.extend_from_slice(line);
    record.push(b'\n');
    rotate_if_full(log);
    write_all(log.fd, &record);
}

fn rotate_if_full(log: &mut Log) {
    let mut st = stat_t { pad0: [0; 6], st_size: 0, pad1: [0; 11] };
    // SAFETY: st is a valid out-buffer laid out as x86_64 struct stat (st_size at offset 48).
    if unsafe { fstat(log.fd, &mut st) } == 0 && st.st_size >= log.max {
        // SAFETY: NUL-terminated names relative to our log directory fd.
        unsafe {
            renameat(LOG_DIR, log.name.as_ptr(), LOG_DIR, log.rotated.as_ptr());
            close(log.fd);
        }
        log.fd = open_log(&log.name, true);
    }
}

fn open_log(name: &[u8], truncate: bool) -> c_int {
    let flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | if truncate { O_TRUNC } else { 0 };
    // SAFETY: name is NUL-terminated; LOG_DIR is the directory fd set up for us.
    unsafe { openat(LOG_DIR, name.as_ptr(), flags, 0o640) }
}

fn write_all(fd: c_int, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { write(fd, data.as_ptr(), data.len()) };
        if n < 0 && errno() == EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        data = &data[n as usize..];
    }
}

fn now() -> timespec {
    let mut ts = timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { clock_gettime(CLOCK_REALTIME, &mut ts) };
    ts
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

fn push_padded(out: &mut Vec<u8>, n: i64, width: usize) {
    let s = n.to_string();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(s.len())));
    out.extend_from_slice(s.as_bytes());
}

/// `2006-01-02T15:04:05.999999999Z` (always nine fraction digits, as CRI log lines use).
fn push_rfc3339_nano(out: &mut Vec<u8>, ts: timespec) {
    let days = ts.tv_sec.div_euclid(86_400);
    let secs = ts.tv_sec.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    push_padded(out, year, 4);
    out.push(b'-');
    push_padded(out, month, 2);
    out.push(b'-');
    push_padded(out, day, 2);
    out.push(b'T');
    push_padded(out, secs / 3600, 2);
    out.push(b':');
    push_padded(out, secs / 60 % 60, 2);
    out.push(b':');
    push_padded(out, secs % 60, 2);
    out.push(b'.');
    push_padded(out, ts.tv_nsec, 9);
    out.push(b'Z');
}

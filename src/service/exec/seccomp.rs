//! The socket filter of an exec (contract section 6): a seccomp-BPF program the
//! child installs last before `execve`, after `PR_SET_NO_NEW_PRIVS`, that refuses
//! `socket(2)` outright (EACCES).
//!
//! Landlock ABI 7 confines TCP only, and a pathname Unix socket's connect only
//! from ABI 9: without this, an allowed program could send UDP datagrams (to the
//! server's own UDP port too), open raw or netlink sockets, or connect to the
//! server's `--unix` socket. With no `socket()`, none of that has a descriptor to
//! start from. What stays: `socketpair(2)` of Unix stream and seqpacket sockets
//! (pipes between the program's own processes; such sockets cannot address
//! anyone else). A datagram pair could `sendto` any pathname socket, so it is
//! refused too, as are pairs of other families. `io_uring_setup` is refused
//! as well: io_uring can create sockets without the `socket` system call.
//!
//! The program is a constant, written by hand for x86_64 and aarch64 (the
//! system call numbers come from `libc` for the target): it checks the
//! architecture first (any other, such as i386 through `int 0x80` with its
//! `socketcall`, kills the process) and, on x86_64, answers every x32 system call
//! with ENOSYS, as a kernel without x32 would. On other architectures there is no
//! filter: [`missing`] says so and `serve` refuses `--allow-exec` unless
//! `--exec-unconfined`.
//!
//! Installing it is one `prctl` on a constant: async-signal-safe, as the child's
//! setup must be (see the `confine` module comment).

use libc::sock_filter;
use std::io;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// The program, for the architectures it is written for.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod bpf {
    use super::{RET_ALLOW, RET_KILL};
    use libc::sock_filter;

    /// `seccomp_data` offsets: the system call number, the audit architecture, and
    /// the low 32 bits of the first two arguments (both architectures are
    /// little-endian; the kernel reads these `int` arguments from the low half only).
    pub(super) const NR: u32 = 0;
    pub(super) const ARCH: u32 = 4;
    pub(super) const ARG0_LOW: u32 = 16;
    pub(super) const ARG1_LOW: u32 = 24;

    /// The type bits of `socketpair`'s second argument (the rest are flags).
    const SOCK_TYPE_MASK: u32 = 0xf;

    pub(super) const RET_EACCES: u32 = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;

    const fn stmt(code: u32, k: u32) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// Jumps `jt` instructions forward when the test holds, else `jf`.
    const fn jump(test: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: (libc::BPF_JMP | test | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }

    const fn load(offset: u32) -> sock_filter {
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
    }

    const fn ret(action: u32) -> sock_filter {
        stmt(libc::BPF_RET | libc::BPF_K, action)
    }

    /// `AUDIT_ARCH_*` (not in `libc`): the ELF machine, 64-bit, little-endian.
    const AUDIT_ARCH_64_LE: u32 = 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "x86_64")]
    pub(super) const AUDIT_ARCH: u32 = AUDIT_ARCH_64_LE | 62; // EM_X86_64
    #[cfg(target_arch = "aarch64")]
    pub(super) const AUDIT_ARCH: u32 = AUDIT_ARCH_64_LE | 183; // EM_AARCH64

    /// The start: the architecture, then the number (in the accumulator after it).
    const HEAD: [sock_filter; 4] = [
        load(ARCH),
        jump(libc::BPF_JEQ, AUDIT_ARCH, 1, 0),
        ret(RET_KILL),
        load(NR),
    ];

    /// x86_64 only: x32 system calls (same architecture, numbers with
    /// `__X32_SYSCALL_BIT`) get ENOSYS; none of them is ever a 64-bit program's.
    #[cfg(target_arch = "x86_64")]
    const X32: [sock_filter; 2] = [
        jump(libc::BPF_JSET, 0x4000_0000, 0, 1),
        ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ];
    #[cfg(target_arch = "aarch64")]
    const X32: [sock_filter; 0] = [];

    /// The rule, with the number in the accumulator. Jump targets, counted from
    /// the instruction after the jump: ALLOW is the 9th instruction, EACCES the 10th.
    const RULE: [sock_filter; 10] = [
        jump(libc::BPF_JEQ, libc::SYS_socket as u32, 8, 0),
        jump(libc::BPF_JEQ, libc::SYS_io_uring_setup as u32, 7, 0),
        jump(libc::BPF_JEQ, libc::SYS_socketpair as u32, 0, 5),
        load(ARG0_LOW),
        jump(libc::BPF_JEQ, libc::AF_UNIX as u32, 0, 4),
        load(ARG1_LOW),
        stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, SOCK_TYPE_MASK),
        jump(libc::BPF_JEQ, libc::SOCK_DGRAM as u32, 1, 0),
        ret(RET_ALLOW),
        ret(RET_EACCES),
    ];

    const LEN: usize = HEAD.len() + X32.len() + RULE.len();

    pub(super) static FILTER: [sock_filter; LEN] = {
        let mut all = [ret(RET_KILL); LEN];
        let mut i = 0;
        while i < LEN {
            all[i] = if i < HEAD.len() {
                HEAD[i]
            } else if i < HEAD.len() + X32.len() {
                X32[i - HEAD.len()]
            } else {
                RULE[i - HEAD.len() - X32.len()]
            };
            i += 1;
        }
        all
    };
}

/// The filter for this architecture, `None` where there is none.
fn program() -> Option<&'static [sock_filter]> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return Some(&bpf::FILTER);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return None;
}

/// Whether the kernel has seccomp filters and the three actions used (asked with
/// `SECCOMP_GET_ACTION_AVAIL`: Linux 4.14 and later, as for `SECCOMP_RET_KILL_PROCESS`).
fn kernel_has_it() -> bool {
    [RET_KILL, libc::SECCOMP_RET_ERRNO, RET_ALLOW]
        .iter()
        .all(|action| {
            // SAFETY: the query reads one u32 through the pointer.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_GET_ACTION_AVAIL,
                    0,
                    action as *const u32,
                )
            };
            rc == 0
        })
}

/// What is missing for the socket filter on this machine, in words.
pub fn missing() -> Option<String> {
    const WHAT: &str = "UDP, raw and Unix sockets stay reachable";
    if program().is_none() {
        return Some(format!(
            "a socket filter for this architecture (seccomp, written for x86_64 \
             and aarch64 only: {WHAT})"
        ));
    }
    (!kernel_has_it()).then(|| format!("seccomp filters ({WHAT})"))
}

/// The filter to install in each child, `None` where it cannot be (see [`missing`]).
pub fn prepare() -> Option<&'static [sock_filter]> {
    program().filter(|_| kernel_has_it())
}

/// Installs `filter` in the calling process. Runs in the child between fork
/// and exec, after `PR_SET_NO_NEW_PRIVS` (without which an unprivileged process
/// may not): one `prctl` on a constant, no allocation.
pub fn install(filter: &'static [sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        // The kernel only reads it.
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: a valid program description on the stack, read during the call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::bpf::*;
    use super::*;

    /// Runs the program on one system call, as the kernel would (the few
    /// instructions it uses).
    fn verdict(arch: u32, nr: u32, args: [u32; 2]) -> u32 {
        let data = |offset: u32| match offset {
            NR => nr,
            ARCH => arch,
            ARG0_LOW => args[0],
            ARG1_LOW => args[1],
            other => panic!("load at {other}"),
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = FILTER[pc];
            pc += 1;
            let code = u32::from(ins.code);
            let jumped = |hold: bool| usize::from(if hold { ins.jt } else { ins.jf });
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => acc = data(ins.k),
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= ins.k,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => pc += jumped(acc == ins.k),
                c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => {
                    pc += jumped(acc & ins.k != 0)
                }
                c if c == libc::BPF_RET | libc::BPF_K => return ins.k,
                other => panic!("instruction {other:#x}"),
            }
        }
    }

    fn call(nr: libc::c_long, args: [libc::c_int; 2]) -> u32 {
        verdict(AUDIT_ARCH, nr as u32, args.map(|a| a as u32))
    }

    #[test]
    fn sockets_are_refused_and_the_rest_allowed() {
        let unix = libc::AF_UNIX;
        for family in [unix, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK] {
            let ty = libc::SOCK_STREAM;
            assert_eq!(call(libc::SYS_socket, [family, ty]), RET_EACCES, "{family}");
        }
        assert_eq!(call(libc::SYS_io_uring_setup, [8, 0]), RET_EACCES);
        let pair = |family, ty| call(libc::SYS_socketpair, [family, ty]);
        assert_eq!(pair(unix, libc::SOCK_STREAM), RET_ALLOW);
        assert_eq!(
            pair(unix, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC),
            RET_ALLOW
        );
        assert_eq!(pair(unix, libc::SOCK_DGRAM), RET_EACCES);
        assert_eq!(
            pair(unix, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK),
            RET_EACCES
        );
        assert_eq!(pair(libc::AF_TIPC, libc::SOCK_STREAM), RET_EACCES);
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_connect,
        ] {
            assert_eq!(call(nr, [0, 0]), RET_ALLOW, "{nr}");
        }
    }

    #[test]
    fn another_architecture_is_killed() {
        // i386 (socketcall is 102 there) and 32-bit ARM.
        for arch in [0x4000_0003, 0x4000_0028] {
            assert_eq!(verdict(arch, 102, [2, 2]), RET_KILL);
            assert_eq!(verdict(arch, 1, [0, 0]), RET_KILL);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_get_enosys() {
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        for nr in [0, 41, 60, 0x3fff_ffff] {
            assert_eq!(verdict(AUDIT_ARCH, 0x4000_0000 | nr, [2, 2]), enosys);
        }
    }
}

//! The op table: every op the server knows, its name on the wire, and which
//! need their body in memory or may be served over any transport.

/// Every op the server knows. Adding an op: a variant, its name, its body policy, a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Auth,
    Ping,
    Echo,
    Upper,
    Stamp,
    Time,
    Stats,
    Pwd,
    Cd,
    Ls,
    Mkdir,
    Rm,
    Put,
    Get,
    Sum,
    Exec,
    Join,
    Leave,
    Say,
    Dm,
}

impl Op {
    pub const ALL: [Op; 20] = [
        Op::Auth,
        Op::Ping,
        Op::Echo,
        Op::Upper,
        Op::Stamp,
        Op::Time,
        Op::Stats,
        Op::Pwd,
        Op::Cd,
        Op::Ls,
        Op::Mkdir,
        Op::Rm,
        Op::Put,
        Op::Get,
        Op::Sum,
        Op::Exec,
        Op::Join,
        Op::Leave,
        Op::Say,
        Op::Dm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Auth => "auth",
            Op::Ping => "ping",
            Op::Echo => "echo",
            Op::Upper => "upper",
            Op::Stamp => "stamp",
            Op::Time => "time",
            Op::Stats => "stats",
            Op::Pwd => "pwd",
            Op::Cd => "cd",
            Op::Ls => "ls",
            Op::Mkdir => "mkdir",
            Op::Rm => "rm",
            Op::Put => "put",
            Op::Get => "get",
            Op::Sum => "sum",
            Op::Exec => "exec",
            Op::Join => "join",
            Op::Leave => "leave",
            Op::Say => "say",
            Op::Dm => "dm",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Ops that need their whole body in memory (bounded by `--max-body`).
    pub fn buffers_body(self) -> bool {
        matches!(self, Op::Echo | Op::Upper | Op::Stamp | Op::Say | Op::Dm)
    }

    /// The stateless ops of contract section 4 (served over every transport).
    pub fn is_stateless(self) -> bool {
        matches!(
            self,
            Op::Ping | Op::Echo | Op::Upper | Op::Stamp | Op::Time | Op::Stats
        )
    }
}

//! The wire format of contract section 1, as pure code over bytes: decoding
//! (`codec`, `header` with its fast path `scan`) and encoding (`reply`). No sockets here.

pub mod codec;
pub mod header;
pub mod proxy;
pub mod reply;
pub mod resp;
mod scan;

pub use codec::{Decoder, Event, FrameError, Limits};
pub use header::{FieldError, Header};
pub use reply::{HeadWriter, encode_frame};

//! Unit tests of the connection machine, driven with no socket.

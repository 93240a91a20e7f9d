//! Virtual security keys on Unix sockets.

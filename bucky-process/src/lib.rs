//! bucky-process (work in progress).

//! bucky-process through its real binary (being written).

//! bucky-metricsd (work in progress).

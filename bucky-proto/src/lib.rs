//! The shared library of bucky: the sample line, metric naming, config loading, and the
//! plumbing every tool of the pipeline needs (line input, whole-line output, counters, logs).
//!
//! # The sample line
//!
//! Every bucky tool passes *samples* to the next over a pipe, one per line. The line is the
//! contract between the tools, so it is specified here.
//!
//! ```text
//! line      = name SP value SP timestamp [ SP host ] LF
//! name      = 1*( any character but whitespace )     ; may carry Graphite tags: a.b;k=v;k2=v2
//! value     = number                                  ; a finite f64
//! timestamp = number                                  ; Unix seconds, >= 0, integer or decimal
//! host      = 1*( any character but whitespace )
//! ```
//!
//! * **name**: the metric name *before* the final naming rules (prefix, reversed host,
//!   postfix, replace char, strip duplicates), which `bucky-carbon` applies. Receivers replace
//!   whitespace in names with `_`.
//! * **value**: written as an integer when it is integral and below 2^63 in magnitude (`42`,
//!   `-0`), otherwise in the shortest form that parses back to the same f64 (`408.4`, `1e-7`,
//!   `1e300`). Every finite f64 survives a write and a read bit for bit. `inf` and `nan` are
//!   never written and are refused on input.
//! * **timestamp**: the same number form, so sub-second times (`1795650000.25`) survive.
//! * **host**: optional; the sending host for collectd and MetricsD samples, absent for StatsD
//!   aggregates. An empty host is not written.
//! * The text is UTF-8 and ends in `\n`. The reader also accepts `\r\n`, runs of spaces or
//!   tabs between fields, and surrounding whitespace, so any Graphite plaintext producer can
//!   feed a bucky tool, and a host-less bucky stream is valid carbon input as it stands.
//!
//! Examples:
//!
//! ```text
//! stats.gauges.queue_depth 42 1795650000
//! interface.en0.if_octets.rx 408.4 1795650000.25 toroid.local
//! requests;env=prod;dc=ams 17 1795650010
//! ```
//!
//! ```
//! use bucky_proto::sample::{parse_line, format_line};
//! let p = parse_line(b"interface.en0.if_octets.rx 408.4 1795650000.25 toroid.local\n").unwrap();
//! assert_eq!(p.sample.name, "interface.en0.if_octets.rx");
//! assert_eq!(p.sample.value, 408.4);
//! assert_eq!(p.sample.timestamp, 1795650000.25);
//! assert_eq!(p.sample.host, Some("toroid.local"));
//! assert_eq!(format_line(&p.sample), "interface.en0.if_octets.rx 408.4 1795650000.25 toroid.local\n");
//! ```
//!
//! A line that does not parse is counted and reported on stderr with its line number
//! (rate-limited) by the tool that reads it; it never stops the stream. Writers emit whole
//! lines only, in writes of at most `PIPE_BUF` bytes, so several writers can share one pipe
//! without a reader ever seeing half a line.

pub mod capture;
pub mod cli;
pub mod config;
pub mod io;
pub mod log;
pub mod naming;
pub mod privs;
pub mod sample;
pub mod scan;
pub mod shutdown;
pub mod stats;
pub mod udp;

pub use naming::{CachedNamer, Namer, NamingOptions};
pub use sample::{parse_line, push_line, split_line, Fields, LineError, ParsedLine, Sample};

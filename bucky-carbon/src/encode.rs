//! Turns sample lines into carbon wire batches: plaintext lines or pickle frames.
//!
//! Naming is applied here. A batch always ends on a line or frame boundary, so it can be sent
//! again whole on a new connection.

use bucky_proto::sample::Fields;
use bucky_proto::{CachedNamer, Namer};
use serde_pickle::SerOptions;

/// Carbon's wire protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `path value timestamp\n`, to carbon's line receiver (port 2003).
    Plaintext,
    /// 4-byte big-endian length + protocol-2 pickle of `[(path, (timestamp, value)), ...]`,
    /// to carbon's pickle receiver (port 2004), at most this many points a frame.
    Pickle { points_per_frame: usize },
}

/// What goes to carbon in one write: whole lines or whole frames.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub samples: usize,
}

/// Series whose Graphite paths are remembered (about 200 bytes each).
pub const NAME_CACHE_SERIES: usize = 100_000;

/// A plaintext batch is cut at about this many bytes.
const PLAINTEXT_BATCH_BYTES: usize = 256 * 1024;

/// Builds batches from samples. Full batches are handed out by [`Encoder::push`]; the partial
/// one by [`Encoder::take_partial`].
#[derive(Debug)]
pub struct Encoder {
    namer: CachedNamer,
    protocol: Protocol,
    current: Batch,
    /// Pickle mode: the paths of the pending points, back to back.
    paths: Vec<u8>,
    /// Pickle mode: (end of path in `paths`, timestamp, value).
    points: Vec<(usize, f64, f64)>,
    path_buf: Vec<u8>,
}

impl Encoder {
    pub fn new(namer: Namer, protocol: Protocol) -> Self {
        let protocol = match protocol {
            Protocol::Pickle { points_per_frame } => Protocol::Pickle {
                points_per_frame: points_per_frame.max(1),
            },
            p => p,
        };
        Encoder {
            namer: CachedNamer::new(namer, NAME_CACHE_SERIES),
            protocol,
            current: Batch {
                bytes: Vec::with_capacity(PLAINTEXT_BATCH_BYTES + 1024),
                samples: 0,
            },
            paths: Vec::new(),
            points: Vec::new(),
            path_buf: Vec::with_capacity(256),
        }
    }

    /// Adds one sample; returns a batch when one is full.
    pub fn push(&mut self, f: &Fields<'_>) -> Option<Batch> {
        if self.protocol == Protocol::Plaintext {
            // The path goes straight into the batch.
            self.namer
                .push_path_bytes(&mut self.current.bytes, f.host, f.name);
            return self.push_numbers(f);
        }
        let mut path = std::mem::take(&mut self.path_buf);
        path.clear();
        self.namer.push_path_bytes(&mut path, f.host, f.name);
        let batch = self.push_named(&path, f);
        self.path_buf = path;
        batch
    }

    /// Adds one sample whose Graphite path (naming applied) is `path`: the router names a
    /// sample once and hands it to the encoder of each of its destinations.
    pub fn push_named(&mut self, path: &[u8], f: &Fields<'_>) -> Option<Batch> {
        match self.protocol {
            Protocol::Plaintext => {
                self.current.bytes.extend_from_slice(path);
                self.push_numbers(f)
            }
            Protocol::Pickle { points_per_frame } => {
                self.paths.extend_from_slice(path);
                self.points
                    .push((self.paths.len(), f.timestamp_f64(), f.value_f64()));
                if self.points.len() >= points_per_frame {
                    return self.take_partial();
                }
                None
            }
        }
    }

    /// Plaintext: ends the line whose path is already in the batch.
    fn push_numbers(&mut self, f: &Fields<'_>) -> Option<Batch> {
        let out = &mut self.current.bytes;
        out.push(b' ');
        match f.numbers {
            Some(numbers) => out.extend_from_slice(numbers),
            None => {
                out.extend_from_slice(f.value);
                out.push(b' ');
                out.extend_from_slice(f.timestamp);
            }
        }
        out.push(b'\n');
        self.current.samples += 1;
        if self.current.bytes.len() >= PLAINTEXT_BATCH_BYTES {
            return Some(self.take_current());
        }
        None
    }

    /// The naming rules this encoder applies in [`Encoder::push`].
    pub fn namer(&self) -> &Namer {
        self.namer.namer()
    }

    /// Hands out whatever is pending, if anything.
    pub fn take_partial(&mut self) -> Option<Batch> {
        if let Protocol::Pickle { .. } = self.protocol {
            if !self.points.is_empty() {
                self.encode_frame();
            }
        }
        if self.current.samples == 0 {
            return None;
        }
        Some(self.take_current())
    }

    fn take_current(&mut self) -> Batch {
        let cap = match self.protocol {
            Protocol::Plaintext => PLAINTEXT_BATCH_BYTES + 1024,
            Protocol::Pickle { .. } => 0,
        };
        std::mem::replace(
            &mut self.current,
            Batch {
                bytes: Vec::with_capacity(cap),
                samples: 0,
            },
        )
    }

    fn encode_frame(&mut self) {
        // The paths come from checked UTF-8 lines and the UTF-8 naming options, so one check
        // of them all passes, and each path then starts and ends on a character boundary.
        let lossy;
        let paths = match std::str::from_utf8(&self.paths) {
            Ok(p) => p,
            Err(_) => {
                lossy = String::from_utf8_lossy(&self.paths).into_owned();
                &lossy
            }
        };
        let mut start = 0;
        let frame: Vec<(&str, (f64, f64))> = self
            .points
            .iter()
            .map(|&(end, ts, v)| {
                let path = paths.get(start..end).unwrap_or_default();
                start = end;
                (path, (ts, v))
            })
            .collect();
        let out = &mut self.current.bytes;
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        match serde_pickle::to_writer(out, &frame, SerOptions::new().proto_v2()) {
            Ok(()) => {
                let len = (out.len() - len_at - 4) as u32;
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
                self.current.samples += frame.len();
            }
            Err(e) => {
                // Serialising strings and floats into a Vec cannot fail; if it ever does, say so
                // rather than send a broken frame.
                log::error!("dropping a pickle frame of {} points: {e}", frame.len());
                out.truncate(len_at);
            }
        }
        self.points.clear();
        self.paths.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucky_proto::sample::split_line;

    fn parse_str(l: &str) -> Result<Fields<'_>, bucky_proto::LineError> {
        split_line(l.as_bytes())
    }
    use bucky_proto::NamingOptions;
    use serde_pickle::{DeOptions, HashableValue, Value};

    fn enc(protocol: Protocol) -> Encoder {
        Encoder::new(Namer::new(&NamingOptions::default()), protocol)
    }

    #[test]
    fn plaintext_applies_naming_and_keeps_number_text() {
        let mut e = Encoder::new(
            Namer::new(&NamingOptions {
                name_prefix: Some("pre".into()),
                ..NamingOptions::default()
            }),
            Protocol::Plaintext,
        );
        for l in [
            "cpu.0.idle 1.50 1795650000.25 node.company.tld",
            "stats.gorm 2 1795650000",
        ] {
            assert!(e.push(&parse_str(l).unwrap()).is_none());
        }
        let b = e.take_partial().unwrap();
        assert_eq!(b.samples, 2);
        assert_eq!(
            String::from_utf8(b.bytes).unwrap(),
            "pre.tld.company.node.cpu.0.idle 1.50 1795650000.25\npre.stats.gorm 2 1795650000\n"
        );
        assert!(e.take_partial().is_none());
    }

    #[test]
    fn push_named_writes_what_push_writes() {
        let namer = Namer::new(&NamingOptions {
            name_prefix: Some("pre".into()),
            ..NamingOptions::default()
        });
        for protocol in [
            Protocol::Plaintext,
            Protocol::Pickle {
                points_per_frame: 3,
            },
        ] {
            let mut a = Encoder::new(namer.clone(), protocol);
            let mut b = Encoder::new(namer.clone(), protocol);
            let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
            for i in 0..10 {
                let l = format!("m.{i} {i}.25 1795650000 h{i}.example.com");
                let f = parse_str(&l).unwrap();
                out_a.extend(a.push(&f));
                let mut path = Vec::new();
                namer.push_path_bytes(&mut path, f.host, f.name);
                out_b.extend(b.push_named(&path, &f));
            }
            out_a.extend(a.take_partial());
            out_b.extend(b.take_partial());
            assert_eq!(out_a, out_b, "{protocol:?}");
        }
    }

    #[test]
    fn plaintext_batches_are_cut_on_line_boundaries() {
        let mut e = enc(Protocol::Plaintext);
        let mut batches = Vec::new();
        for i in 0..10_000 {
            let l = format!("metric.number.{i} {i} 1795650000");
            if let Some(b) = e.push(&parse_str(&l).unwrap()) {
                batches.push(b);
            }
        }
        batches.extend(e.take_partial());
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(|b| b.samples).sum::<usize>(), 10_000);
        for b in &batches {
            assert!(b.bytes.ends_with(b"\n"));
            assert_eq!(b.bytes.iter().filter(|&&c| c == b'\n').count(), b.samples);
        }
    }

    fn decode_frames(mut bytes: &[u8]) -> Vec<(String, f64, f64)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            let payload = &bytes[4..4 + len];
            assert_eq!(&payload[..2], b"\x80\x02", "protocol 2");
            let v: Value = serde_pickle::value_from_slice(payload, DeOptions::new()).unwrap();
            let Value::List(items) = v else {
                panic!("not a list: {v:?}")
            };
            for item in items {
                let Value::Tuple(t) = item else { panic!() };
                let (Value::String(name), Value::Tuple(p)) = (&t[0], &t[1]) else {
                    panic!("names must be str: {t:?}")
                };
                let (Value::F64(ts), Value::F64(v)) = (&p[0], &p[1]) else {
                    panic!()
                };
                out.push((name.clone(), *ts, *v));
            }
            bytes = &bytes[4 + len..];
        }
        let _ = HashableValue::None;
        out
    }

    #[test]
    fn pickle_frames_hold_at_most_the_buffer_size() {
        let mut e = enc(Protocol::Pickle {
            points_per_frame: 3,
        });
        let mut bytes = Vec::new();
        let mut frames = 0;
        for i in 0..7 {
            let l = format!("a.{i} {}.5 {} h.example", i, 1795650000 + i);
            if let Some(b) = e.push(&parse_str(&l).unwrap()) {
                assert_eq!(b.samples, 3);
                bytes.extend(b.bytes);
                frames += 1;
            }
        }
        let last = e.take_partial().unwrap();
        assert_eq!(last.samples, 1);
        bytes.extend(last.bytes);
        assert_eq!(frames, 2);
        let got = decode_frames(&bytes);
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], ("example.h.a.0".to_string(), 1795650000.0, 0.5));
        assert_eq!(got[6], ("example.h.a.6".to_string(), 1795650006.0, 6.5));
    }

    #[test]
    fn pickle_round_trips_exact_values_and_unicode_names() {
        let mut e = enc(Protocol::Pickle {
            points_per_frame: 500,
        });
        let values = [0.1, -0.0, 1e300, 5e-324, 123_456_789.123_456_79, -42.0];
        for (i, v) in values.iter().enumerate() {
            let l = format!("ünï.{i} {} 1795650000", bucky_proto::sample::Number(*v));
            assert!(e.push(&parse_str(&l).unwrap()).is_none());
        }
        let got = decode_frames(&e.take_partial().unwrap().bytes);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(got[i].0, format!("ünï.{i}"));
            assert_eq!(got[i].2.to_bits(), v.to_bits());
        }
    }
}

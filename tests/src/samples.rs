//! Generated samples with exact, varied values and the points carbon must end up holding.

use std::collections::HashMap;
use std::ops::Range;

use crate::carbon::Points;
use crate::unix_now;

/// N series × M timestamps of samples (`NAME VALUE TIMESTAMP` lines), in stream order: for
/// each timestamp, one sample per series. Series `i` is named `test.<prefix>.s<i>.value`;
/// timestamps are consecutive whole seconds ending 10 minutes ago (whisper drops points older
/// than its retention, so test points must be recent). Values are exact and varied: integers,
/// negatives, fractions, huge, tiny, subnormal, negative zero.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The points in stream order: (name, timestamp, value).
    pub points: Vec<(String, i64, f64)>,
    /// One sample line per point, each ending in `\n`.
    pub lines: Vec<String>,
    /// The series names.
    pub names: Vec<String>,
}

impl Samples {
    /// `series` × `per_series` samples; see [`Samples`].
    pub fn generate(prefix: &str, series: usize, per_series: usize) -> Samples {
        let first_ts = unix_now() - 600 - per_series as i64;
        Samples::generate_at(prefix, series, per_series, first_ts)
    }

    /// Like [`generate`](Self::generate) with an explicit first timestamp.
    pub fn generate_at(prefix: &str, series: usize, per_series: usize, first_ts: i64) -> Samples {
        let names: Vec<String> = (0..series)
            .map(|i| format!("test.{prefix}.s{i:03}.value"))
            .collect();
        let mut points = Vec::with_capacity(series * per_series);
        let mut lines = Vec::with_capacity(series * per_series);
        for j in 0..per_series {
            let ts = first_ts + j as i64;
            for (i, name) in names.iter().enumerate() {
                let v = sample_value(i, j);
                lines.push(format!("{name} {} {ts}\n", format_value(i, j, v)));
                points.push((name.clone(), ts, v));
            }
        }
        Samples {
            points,
            lines,
            names,
        }
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// All lines as one byte string.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_of(0..self.len())
    }

    /// Lines `range` as one byte string.
    pub fn bytes_of(&self, range: Range<usize>) -> Vec<u8> {
        self.lines[range].concat().into_bytes()
    }

    /// The expected points of all samples, by series.
    pub fn expected(&self) -> Points {
        self.expected_of(0..self.len())
    }

    /// The expected points of samples `range`, by series.
    pub fn expected_of(&self, range: Range<usize>) -> Points {
        let mut map: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        for (name, ts, v) in &self.points[range] {
            map.entry(name.clone()).or_default().push((*ts, *v));
        }
        map
    }

    /// The names as `&str`s (for [`CarbonCache::fetch`](crate::CarbonCache::fetch)).
    pub fn name_refs(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }
}

/// The exact value of sample `point` of series `series`: a mix of integers, negatives,
/// fractions that are not exact in decimal, huge and tiny magnitudes, subnormals and -0.
pub fn sample_value(series: usize, point: usize) -> f64 {
    let (i, j) = (series as f64, point as f64);
    match (series + point) % 10 {
        0 => j - 500.0,
        1 => j + 0.5,
        2 => (i * 1000.0 + j) / 7.0,
        3 => -(j + 1.0) * 1.1e-3,
        4 => (j + 1.0) * 1.234_567_890_123e297,
        5 if point % 2 == 0 => (j + 1.0) * f64::from_bits(1),
        5 => (j + 1.0) * 3.3e-300,
        6 => j * 0.1 + i,
        7 => 9_007_199_254_740_993.0 - j * 3.0,
        8 => 1.234_567_890_123_456_7e20 + j * 1e5,
        _ if point % 100 == 9 => -0.0,
        _ => -(j + i) * 12_345.678,
    }
}

/// Huge and tiny values in exponent form, the rest in plain decimal: both are sample lines.
fn format_value(series: usize, point: usize, v: f64) -> String {
    match (series + point) % 10 {
        4 | 5 => format!("{v:e}"),
        _ => format!("{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_text() {
        let s = Samples::generate_at("x", 10, 200, 1_700_000_000);
        assert_eq!(s.len(), 2000);
        for (line, (name, ts, v)) in s.lines.iter().zip(&s.points) {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{line}");
            assert_eq!(f[0], name);
            assert_eq!(
                f[1].parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{line}"
            );
            assert_eq!(f[2].parse::<i64>().unwrap(), *ts);
            assert!(v.is_finite());
        }
        assert!(s
            .points
            .iter()
            .any(|p| p.2 == 0.0 && p.2.is_sign_negative()));
        assert!(s.points.iter().any(|p| p.2.is_subnormal()));
        assert_eq!(s.expected().len(), 10);
        assert_eq!(s.expected_of(0..20)["test.x.s003.value"].len(), 2);
    }

    #[test]
    fn python_reprs_parse() {
        for (text, v) in [
            ("1e-300", 1e-300),
            ("1.2345678901234568e+20", 1.2345678901234568e20),
            ("-0.0", -0.0),
            ("5e-324", 5e-324),
        ] {
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), f64::to_bits(v));
        }
    }
}

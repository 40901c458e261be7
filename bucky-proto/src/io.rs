//! Line input and whole-line output: how every bucky tool is a good pipe.
//!
//! Input is read in large chunks and split into lines without copying; overlong lines are cut
//! off and reported, so memory stays bounded whatever arrives. Output is buffered and written
//! in whole lines, in writes of at most `PIPE_BUF` bytes, so that several writers can share one
//! pipe without interleaving inside a line.

use std::io::{self, Read, Write};

/// The size up to which a pipe write is atomic on Linux (and the POSIX minimum).
pub const PIPE_BUF: usize = 4096;

/// Default longest line accepted; a longer one is reported and skipped.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// One item delivered by [`LineReader::read_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its `\n`.
    Text(&'a [u8]),
    /// A line longer than the limit; the reader skipped it. Holds its length so far.
    TooLong(usize),
}

/// Splits a byte stream into lines, one `read` at a time.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_line: usize,
    line_no: u64,
    /// Inside an overlong line: bytes are discarded up to the next newline.
    skipping: Option<usize>,
    /// Bytes before this offset hold no newline (already scanned).
    scanned: usize,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, 256 * 1024, DEFAULT_MAX_LINE)
    }

    /// `buffer` is the read size; it is raised to hold at least one line of `max_line` bytes.
    pub fn with_limits(inner: R, buffer: usize, max_line: usize) -> Self {
        let max_line = max_line.max(1);
        LineReader {
            inner,
            buf: vec![0; buffer.max(max_line + 1).max(4096)],
            start: 0,
            end: 0,
            max_line,
            line_no: 0,
            skipping: None,
            scanned: 0,
            eof: false,
        }
    }

    /// Lines delivered so far (the number of the last one).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Reads once (blocking until some input or EOF arrives) and calls `f(line_no, line)` for
    /// every complete line now buffered. At EOF an unterminated last line is delivered too.
    /// Returns `Ok(false)` once the input is exhausted.
    pub fn read_batch(&mut self, f: impl FnMut(u64, Line<'_>)) -> io::Result<bool> {
        let more = self.fill()?;
        self.drain(f);
        Ok(more)
    }

    /// The read half of [`read_batch`](Self::read_batch): one blocking read. `Ok(false)` at EOF.
    pub fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        } else if self.end == self.buf.len() {
            // Room for the next read: move the partial line to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(n > 0)
    }

    /// The split half of [`read_batch`](Self::read_batch): delivers the complete lines that
    /// [`fill`](Self::fill) brought in (and, after EOF, the unterminated last one).
    pub fn drain(&mut self, mut f: impl FnMut(u64, Line<'_>)) {
        let mut pos = self.scanned.max(self.start);
        while let Some(i) = find_newline(&self.buf[pos..self.end]) {
            let nl = pos + i;
            self.line_no += 1;
            if let Some(len) = self.skipping.take() {
                f(self.line_no, Line::TooLong(len + nl - self.start));
            } else if nl - self.start > self.max_line {
                // A whole overlong line can arrive in one read: the limit holds all the same.
                f(self.line_no, Line::TooLong(nl - self.start));
            } else {
                f(self.line_no, Line::Text(&self.buf[self.start..nl]));
            }
            self.start = nl + 1;
            pos = self.start;
        }
        self.scanned = self.end;
        if self.eof {
            if let Some(len) = self.skipping.take() {
                self.line_no += 1;
                f(self.line_no, Line::TooLong(len + self.end - self.start));
            } else if self.end - self.start > self.max_line {
                self.line_no += 1;
                f(self.line_no, Line::TooLong(self.end - self.start));
            } else if self.start < self.end {
                self.line_no += 1;
                f(self.line_no, Line::Text(&self.buf[self.start..self.end]));
            }
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
            return;
        }
        let partial = self.end - self.start;
        if partial > self.max_line {
            // Drop the buffered part of an overlong line and keep discarding to its end.
            *self.skipping.get_or_insert(0) += partial;
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
    }

    /// Drains the whole input, for tools and tests that do not care about read boundaries.
    pub fn for_each(&mut self, mut f: impl FnMut(u64, Line<'_>)) -> io::Result<()> {
        while self.read_batch(&mut f)? {}
        Ok(())
    }
}

/// The first `\n` in `b`. Sample lines are short, where a few inline 16-byte compares beat
/// memchr's set-up; past 128 bytes memchr's wider scan takes over.
#[inline(always)]
fn find_newline(b: &[u8]) -> Option<usize> {
    let newline = wide::u8x16::splat(b'\n');
    let mut at = 0;
    while at + 16 <= b.len() && at < 128 {
        let m = crate::scan::load16(b, at).cmp_eq(newline).move_mask();
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize);
        }
        at += 16;
    }
    memchr::memchr(b'\n', &b[at..]).map(|i| at + i)
}

/// Buffers whole lines and writes them in chunks of at most `chunk` bytes.
///
/// A line longer than the chunk is written alone (it cannot be atomic anyway).
#[derive(Debug)]
pub struct LineWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    chunk: usize,
}

impl<W: Write> LineWriter<W> {
    /// A writer whose every write is at most `PIPE_BUF` bytes of whole lines.
    pub fn new(inner: W) -> Self {
        Self::with_chunk(inner, PIPE_BUF)
    }

    pub fn with_chunk(inner: W, chunk: usize) -> Self {
        LineWriter {
            inner,
            buf: Vec::with_capacity(chunk.max(1) * 2),
            chunk: chunk.max(1),
        }
    }

    /// Appends one or more whole lines produced by `f` (which must end them with `\n`).
    pub fn push(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let before = self.buf.len();
        f(&mut self.buf);
        if self.buf.len() > self.chunk {
            if before > 0 {
                self.inner.write_all(&self.buf[..before])?;
                self.buf.drain(..before);
            }
            if self.buf.len() >= self.chunk {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Appends bytes that are whole lines.
    pub fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        self.push(|b| b.extend_from_slice(lines))
    }

    /// Writes out everything buffered and flushes the inner writer.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

/// True for the error a write gets when the reader of our pipe went away.
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_newline_agrees_with_memchr() {
        for len in 0..300 {
            for nl in (0..len).step_by(7).map(Some).chain([None]) {
                let mut b = vec![b'x'; len];
                if let Some(i) = nl {
                    b[i] = b'\n';
                    if i + 3 < len {
                        b[i + 3] = b'\n';
                    }
                }
                assert_eq!(
                    find_newline(&b),
                    memchr::memchr(b'\n', &b),
                    "len {len} nl {nl:?}"
                );
            }
        }
    }

    /// A reader that returns its data in the given pieces, one per read call.
    struct Pieces(Vec<Vec<u8>>);
    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let p = &mut self.0[0];
            let n = p.len().min(out.len());
            out[..n].copy_from_slice(&p[..n]);
            p.drain(..n);
            if p.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    fn collect(pieces: &[&[u8]], buffer: usize, max: usize) -> Vec<(u64, String)> {
        let mut r = LineReader::with_limits(
            Pieces(pieces.iter().map(|p| p.to_vec()).collect()),
            buffer,
            max,
        );
        let mut out = Vec::new();
        r.for_each(|n, l| {
            out.push((
                n,
                match l {
                    Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    Line::TooLong(len) => format!("<too long: {len}>"),
                },
            ))
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_across_reads() {
        let got = collect(&[b"a 1 2\nb 3", b" 4\n", b"\nc 5 6"], 4096, 100);
        assert_eq!(
            got,
            vec![
                (1, "a 1 2".into()),
                (2, "b 3 4".into()),
                (3, "".into()),
                (4, "c 5 6".into())
            ]
        );
    }

    #[test]
    fn overlong_lines_are_skipped_and_counted() {
        let long = vec![b'x'; 10_000];
        let mut input = b"ok 1 1\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nafter 2 2\n");
        let pieces: Vec<&[u8]> = input.chunks(700).collect();
        let got = collect(&pieces, 4096, 100);
        assert_eq!(
            got,
            vec![
                (1, "ok 1 1".into()),
                (2, "<too long: 10000>".into()),
                (3, "after 2 2".into())
            ]
        );
    }

    #[test]
    fn overlong_line_within_one_read() {
        let mut input = vec![b'z'; 500];
        input.extend_from_slice(b"\nok 1 1\n");
        input.extend_from_slice(&[b'w'; 300]);
        let got = collect(&[&input], 4096, 100);
        assert_eq!(
            got,
            vec![
                (1, "<too long: 500>".into()),
                (2, "ok 1 1".into()),
                (3, "<too long: 300>".into())
            ]
        );
    }

    #[test]
    fn overlong_last_line_without_newline() {
        let long = vec![b'y'; 5000];
        let got = collect(&[&long], 4096, 100);
        assert_eq!(got, vec![(1, "<too long: 5000>".into())]);
    }

    #[test]
    fn tiny_buffer_still_holds_a_max_line() {
        let got = collect(&[b"abcdefgh\n", b"ij\n"], 1, 8);
        assert_eq!(got, vec![(1, "abcdefgh".into()), (2, "ij".into())]);
    }

    /// Records the size of every write.
    struct Writes(Vec<Vec<u8>>);
    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_are_whole_lines_within_the_chunk() {
        let mut w = LineWriter::with_chunk(Writes(Vec::new()), 64);
        for i in 0..100 {
            w.push(|b| b.extend_from_slice(format!("metric.{i} {i} 1795650000\n").as_bytes()))
                .unwrap();
        }
        let mut long = vec![b'z'; 200];
        long.push(b'\n');
        w.write_lines(&long).unwrap();
        w.flush().unwrap();
        let writes = &w.get_ref().0;
        let mut all = Vec::new();
        for chunk in writes {
            assert!(
                chunk.ends_with(b"\n"),
                "{:?}",
                String::from_utf8_lossy(chunk)
            );
            if chunk.len() > 64 {
                assert_eq!(chunk.iter().filter(|&&c| c == b'\n').count(), 1);
            }
            all.extend_from_slice(chunk);
        }
        assert_eq!(all.iter().filter(|&&c| c == b'\n').count(), 101);
    }
}

//! Text files of the user's, read line by line: every line is checked as UTF-8 on its own (a bad
//! line is an error naming its source and 1-based number, which a reader may skip), a UTF-8
//! byte-order mark at the start is dropped, and `\n` or `\r\n` ends a line. Only one line is held
//! at a time.

use crate::error::{Error, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a line could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The source failed (the line and what follows are lost).
    Io(std::io::Error),
    /// The line is not UTF-8.
    NotUtf8 {
        /// 0-based byte offset of the first invalid byte within the line.
        at: usize,
    },
}

/// The lines of a reader, with their 1-based numbers.
pub struct Lines<R> {
    reader: R,
    /// What errors call the source: a file path, or "stdin".
    origin: PathBuf,
    line: usize,
    bytes: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl<R: BufRead> Lines<R> {
    /// The lines of `reader`; `origin` names it in errors (a file path, or "stdin").
    pub fn new(reader: R, origin: impl Into<PathBuf>) -> Self {
        Lines {
            reader,
            origin: origin.into(),
            line: 0,
            bytes: 0,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// Bytes read so far (line endings included).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The source, as errors name it.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The error for a line: its source and number, and what is wrong with it.
    pub fn error(&self, line: usize, err: &LineError) -> Error {
        match err {
            LineError::Io(e) => Error::file(&self.origin, format!("reading line {line}: {e}")),
            LineError::NotUtf8 { at } => Error::Parse {
                path: self.origin.clone(),
                line,
                msg: format!("not UTF-8 text (byte {} of the line)", at + 1),
            },
        }
    }
}

impl Lines<std::io::BufReader<std::fs::File>> {
    /// The lines of the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        Ok(Lines::new(std::io::BufReader::new(file), path))
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    /// The line's number and its text (without the line ending).
    type Item = (usize, std::result::Result<String, LineError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(n) => self.bytes += n as u64,
            Err(e) => {
                self.failed = true;
                return Some((self.line + 1, Err(LineError::Io(e))));
            }
        }
        self.line += 1;
        let mut bytes = self.buf.as_slice();
        if self.line == 1 {
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| LineError::NotUtf8 {
                at: e.valid_up_to(),
            });
        Some((self.line, text))
    }
}

/// A whole file as text, for formats that are not line-based (SQuAD JSON): a byte-order mark is
/// dropped, and bytes that are not UTF-8 are an error naming the line they are on.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let body = bytes.strip_prefix(BOM).unwrap_or(&bytes);
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text.to_string()),
        Err(e) => {
            let before = &body[..e.valid_up_to()];
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            let column = before.len()
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
            Err(Error::Parse {
                path: path.to_path_buf(),
                line,
                msg: format!("not UTF-8 text (byte {} of the line)", column + 1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<(usize, std::result::Result<String, String>)> {
        Lines::new(bytes, "x")
            .map(|(n, l)| (n, l.map_err(|e| format!("{e:?}"))))
            .collect()
    }

    #[test]
    fn endings_bom_and_bad_bytes() {
        let got = lines(b"\xEF\xBB\xBFone\r\ntwo\n\xFFthree\nlast");
        assert_eq!(got[0], (1, Ok("one".to_string())));
        assert_eq!(got[1], (2, Ok("two".to_string())));
        assert_eq!(got[2], (3, Err("NotUtf8 { at: 0 }".to_string())));
        assert_eq!(got[3], (4, Ok("last".to_string())));
        assert_eq!(got.len(), 4);
        // A byte-order mark is only dropped at the start.
        assert_eq!(lines(b"a\n\xEF\xBB\xBFb")[1].1, Ok("\u{feff}b".to_string()));
        let l = Lines::new(&b""[..], "stdin");
        let msg = l.error(7, &LineError::NotUtf8 { at: 2 }).to_string();
        assert_eq!(msg, "stdin:7: not UTF-8 text (byte 3 of the line)");
    }
}

//! A NumPy `.npy` file of byte strings, read without Python: the object array of pickled `bytes`
//! that transformers' `RealmRetriever` saves as `block_records.npy` (`descr '|O'`), or a
//! fixed-width `|S<n>` array. Only where each record lies in the file is kept in memory
//! ([`ByteRecords`]); the records are read from the file one at a time
//! ([`ByteRecords::read`]).
//!
//! The object array is a pickle (protocol 2 to 5) that this module evaluates with a small,
//! closed machine: the opcodes NumPy's pickling of an array uses, no imports, no calls (a
//! `GLOBAL` is a name, a `REDUCE` a pair), byte strings remembered as file spans. Every length
//! read from the file is checked against what is left of it before anything is allocated,
//! nesting is limited to [`MAX_DEPTH`], and the objects built (memo copies included) are
//! limited to [`cell_budget`] of the file's size, so a damaged or hostile file is an error
//! naming it, never a panic or an allocation out of proportion to the file.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Deepest nesting of tuples, lists and calls accepted (NumPy's arrays need 4).
pub const MAX_DEPTH: u16 = 32;

/// Longest text (a `GLOBAL`'s names, a string) read into memory: the metadata of an array.
const MAX_TEXT: u64 = 1 << 16;

/// Objects (a container and each item it holds count one each) a pickle of `file_len` bytes may
/// build, memo copies included: every opcode that makes an object takes at least two bytes of
/// the file, so a real array needs far fewer.
pub fn cell_budget(file_len: u64) -> u64 {
    file_len / 2 + 4096
}

/// Where one record's bytes are in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    offset: u64,
    len: u64,
}

/// The records of a `.npy` file of byte strings: their places in the file.
#[derive(Debug)]
pub struct ByteRecords {
    path: PathBuf,
    spans: Vec<Span>,
    /// `|S<n>` arrays pad a record with NULs to the width; those are not part of it.
    strip_nul: bool,
    file: BufReader<File>,
}

impl ByteRecords {
    /// Reads the header (and, for an object array, the pickle) of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |msg: String| Error::file(path, msg);
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
        let mut input = Input {
            r: BufReader::new(file),
            pos: 0,
            len: file_len,
        };
        let header = read_header(&mut input).map_err(err)?;
        let (spans, strip_nul) = match header.descr {
            Descr::Object => (
                read_pickled_array(&mut input, header.count).map_err(err)?,
                false,
            ),
            Descr::Bytes(width) => {
                let need = header
                    .count
                    .checked_mul(width)
                    .filter(|&n| n <= input.left());
                if need.is_none() {
                    return Err(err(format!(
                        "{} records of {width} bytes, but only {} bytes follow the header",
                        header.count,
                        input.left()
                    )));
                }
                let start = input.pos;
                let spans = (0..header.count)
                    .map(|i| Span {
                        offset: start + i * width,
                        len: width,
                    })
                    .collect();
                (spans, true)
            }
        };
        Ok(ByteRecords {
            path: path.to_path_buf(),
            spans,
            strip_nul,
            file: input.r,
        })
    }

    /// The `.npy` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many records the array holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of record `i`, read into `buf` (replacing what it held).
    pub fn read(&mut self, i: usize, buf: &mut Vec<u8>) -> Result<()> {
        let span = *self.spans.get(i).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("record {i} asked for, but it holds {}", self.spans.len()),
            )
        })?;
        let err = |e: std::io::Error| Error::file(&self.path, format!("record {i}: {e}"));
        self.file.seek(SeekFrom::Start(span.offset)).map_err(err)?;
        buf.clear();
        (&mut self.file)
            .take(span.len)
            .read_to_end(buf)
            .map_err(err)?;
        if buf.len() as u64 != span.len {
            return Err(Error::file(
                &self.path,
                format!("record {i}: the file ends inside it"),
            ));
        }
        if self.strip_nul {
            let keep = buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            buf.truncate(keep);
        }
        Ok(())
    }
}

/// The file being parsed, with its position and length (what every length read is checked
/// against).
struct Input<R> {
    r: R,
    pos: u64,
    len: u64,
}

type Parse<T> = std::result::Result<T, String>;

impl<R: BufRead> Input<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Parse<[u8; N]> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("the file ends at byte {} inside the pickle", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u8(&mut self) -> Parse<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    fn u16(&mut self) -> Parse<u16> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }

    fn u32(&mut self) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// `n` bytes into memory: only for short texts (checked against [`MAX_TEXT`] and the file).
    fn text(&mut self, n: u64, what: &str) -> Parse<Vec<u8>> {
        if n > MAX_TEXT || n > self.left() {
            return Err(format!(
                "a {what} of {n} bytes at byte {} (at most {MAX_TEXT}, and {} are left)",
                self.pos,
                self.left()
            ));
        }
        let mut v = vec![0u8; n as usize];
        self.r
            .read_exact(&mut v)
            .map_err(|_| format!("the file ends inside a {what}"))?;
        self.pos += n;
        Ok(v)
    }

    fn utf8(&mut self, n: u64, what: &str) -> Parse<String> {
        String::from_utf8(self.text(n, what)?).map_err(|_| format!("a {what} that is not UTF-8"))
    }

    /// A line ending in `\n` (a `GLOBAL`'s module or name), at most [`MAX_TEXT`] bytes.
    fn line(&mut self) -> Parse<String> {
        let mut v = Vec::new();
        (&mut self.r)
            .take(MAX_TEXT + 1)
            .read_until(b'\n', &mut v)
            .map_err(|e| e.to_string())?;
        self.pos += v.len() as u64;
        if v.pop() != Some(b'\n') {
            return Err(format!(
                "a GLOBAL name without its end before byte {}",
                self.pos
            ));
        }
        String::from_utf8(v).map_err(|_| "a GLOBAL name that is not UTF-8".to_string())
    }

    /// Skips `n` bytes (a byte string's contents, kept as a span), checked against the file.
    fn span(&mut self, n: u64) -> Parse<Span> {
        if n > self.left() {
            return Err(format!(
                "a byte string of {n} bytes at byte {}, but only {} are left",
                self.pos,
                self.left()
            ));
        }
        let span = Span {
            offset: self.pos,
            len: n,
        };
        let skipped = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        if skipped != n {
            return Err(format!(
                "the file ends inside a byte string at byte {}",
                self.pos
            ));
        }
        self.pos += n;
        Ok(span)
    }
}

/// What the array holds, from the header's `descr`.
enum Descr {
    Object,
    Bytes(u64),
}

struct Header {
    descr: Descr,
    count: u64,
}

/// The `.npy` header: magic, version, and the dict literal with `descr`, `fortran_order` and a
/// one-dimensional `shape`.
fn read_header<R: BufRead>(input: &mut Input<R>) -> Parse<Header> {
    if input.len < 10 || input.bytes::<6>()? != *b"\x93NUMPY" {
        return Err("not a NumPy .npy file (no \\x93NUMPY magic)".into());
    }
    let [major, _minor] = input.bytes::<2>()?;
    let header_len = match major {
        1 => u64::from(input.u16()?),
        2 | 3 => u64::from(input.u32()?),
        v => return Err(format!(".npy format version {v} is not known")),
    };
    let text = String::from_utf8(input.text(header_len, "header")?)
        .map_err(|_| "a header that is not UTF-8".to_string())?;
    let field = |key: &str| -> Parse<&str> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("the header has no '{key}': {text}"))?;
        let rest = &text[at + key.len() + 2..];
        Ok(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = if descr.starts_with("'|O'") {
        Descr::Object
    } else if let Some(width) = descr.strip_prefix("'|S") {
        let width = width.split('\'').next().unwrap_or("");
        Descr::Bytes(
            width
                .parse()
                .map_err(|_| format!("descr '|S{width}' has no width"))?,
        )
    } else {
        return Err(format!(
            "holds {}, not byte strings (descr '|O' or '|S<n>')",
            descr.split(',').next().unwrap_or(descr)
        ));
    };
    // A one-dimensional array reads the same in either order; the shape is checked below.
    let order = field("fortran_order")?;
    if !order.starts_with("False") && !order.starts_with("True") {
        return Err(format!("fortran_order is neither True nor False: {text}"));
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("shape is not a tuple: {text}"))?;
    let dims: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let count = match dims.as_slice() {
        [n] => n
            .parse::<u64>()
            .map_err(|_| format!("shape ({n},) is not a count"))?,
        _ => return Err(format!("shape ({inner}) is not one-dimensional")),
    };
    Ok(Header { descr, count })
}

/// A value of the pickle machine. Containers know their nesting depth and how many cells they
/// hold, so copies are charged to the budget and drops never recurse deeper than [`MAX_DEPTH`].
#[derive(Clone, Debug)]
enum Obj {
    Mark,
    None,
    /// A bool or float: their values do not matter here.
    Bool,
    Float,
    Int(i64),
    Text(String),
    Bytes(Span),
    Global(Box<(String, String)>),
    Tuple(Items),
    List(Items),
    Dict(Items),
    /// A `REDUCE` (callable, arguments) or `BUILD` (object, state): kept, never called.
    Call(Items),
    Build(Items),
}

#[derive(Clone, Debug, Default)]
struct Items {
    items: Vec<Obj>,
    depth: u16,
    cells: u64,
}

impl Obj {
    fn depth(&self) -> u16 {
        self.items().map_or(0, |c| c.depth)
    }

    fn cells(&self) -> u64 {
        self.items().map_or(1, |c| c.cells)
    }

    fn items(&self) -> Option<&Items> {
        match self {
            Obj::Tuple(c) | Obj::List(c) | Obj::Dict(c) | Obj::Call(c) | Obj::Build(c) => Some(c),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Obj::Mark => "mark",
            Obj::None => "None",
            Obj::Bool => "bool",
            Obj::Int(_) => "int",
            Obj::Float => "float",
            Obj::Text(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::Global(_) => "global",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Call(_) => "call",
            Obj::Build(_) => "build",
        }
    }
}

impl Items {
    fn new(items: Vec<Obj>) -> Parse<Self> {
        let mut c = Items {
            items: Vec::new(),
            depth: 1,
            cells: 1,
        };
        c.extend(items)?;
        Ok(c)
    }

    fn extend(&mut self, items: Vec<Obj>) -> Parse<()> {
        for item in &items {
            if matches!(item, Obj::Mark) {
                return Err("a mark inside a container".into());
            }
            self.depth = self.depth.max(item.depth() + 1);
            self.cells += item.cells();
        }
        if self.depth > MAX_DEPTH {
            return Err(format!("objects nested deeper than {MAX_DEPTH}"));
        }
        self.items.extend(items);
        Ok(())
    }
}

/// The pickle machine's state: its stack, memo and what is left of the cell budget.
struct Machine {
    stack: Vec<Obj>,
    memo: Vec<Obj>,
    budget: u64,
}

impl Machine {
    fn charge(&mut self, cells: u64) -> Parse<()> {
        self.budget = self.budget.checked_sub(cells).ok_or_else(|| {
            "the pickle builds more objects than a file of its size can hold".to_string()
        })?;
        Ok(())
    }

    fn push(&mut self, obj: Obj) -> Parse<()> {
        self.charge(1)?;
        self.stack.push(obj);
        Ok(())
    }

    fn pop(&mut self) -> Parse<Obj> {
        match self.stack.pop() {
            Some(Obj::Mark) | None => Err("an opcode found too few objects on the stack".into()),
            Some(o) => Ok(o),
        }
    }

    fn pop_to_mark(&mut self) -> Parse<Vec<Obj>> {
        let at = self
            .stack
            .iter()
            .rposition(|o| matches!(o, Obj::Mark))
            .ok_or("an opcode that needs a mark found none")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Parse<&mut Obj> {
        self.stack
            .last_mut()
            .ok_or_else(|| "an opcode found an empty stack".to_string())
    }

    fn memo_put(&mut self, id: u64) -> Parse<()> {
        let obj = match self.stack.last() {
            Some(Obj::Mark) | None => return Err("a memo put with nothing to remember".into()),
            Some(o) => o.clone(),
        };
        self.charge(obj.cells())?;
        let id = usize::try_from(id).map_err(|_| "a memo id out of range".to_string())?;
        // CPython numbers its memo 0, 1, 2, ...: anything else is not a pickle of this kind.
        match id.cmp(&self.memo.len()) {
            std::cmp::Ordering::Less => self.memo[id] = obj,
            std::cmp::Ordering::Equal => self.memo.push(obj),
            std::cmp::Ordering::Greater => {
                return Err(format!(
                    "memo id {id} skips ahead of the {} remembered",
                    self.memo.len()
                ))
            }
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> Parse<()> {
        let obj = usize::try_from(id)
            .ok()
            .and_then(|i| self.memo.get(i))
            .ok_or_else(|| format!("memo id {id} was never put"))?
            .clone();
        self.charge(obj.cells())?;
        self.stack.push(obj);
        Ok(())
    }

    fn tuple(&mut self, items: Vec<Obj>) -> Parse<()> {
        self.push(Obj::Tuple(Items::new(items)?))
    }

    /// Appends `items` to the list (or, with `dict`, sets them as pairs in the dict) on top.
    fn add_to_top(&mut self, items: Vec<Obj>, dict: bool) -> Parse<()> {
        match self.top()? {
            Obj::List(c) if !dict => c.extend(items),
            Obj::Dict(c) if dict && items.len().is_multiple_of(2) => c.extend(items),
            Obj::Dict(_) if dict => Err("SETITEMS with an odd number of objects".into()),
            other => Err(format!(
                "{} onto a {}",
                if dict { "SETITEM" } else { "APPEND" },
                other.kind()
            )),
        }
    }
}

/// Evaluates the pickle at the input's position to its final object.
fn unpickle<R: BufRead>(input: &mut Input<R>) -> Parse<Obj> {
    let mut m = Machine {
        stack: Vec::new(),
        memo: Vec::new(),
        budget: cell_budget(input.len),
    };
    loop {
        let at = input.pos;
        let op = input.u8()?;
        match op {
            0x80 => {
                let proto = input.u8()?;
                if !(2..=5).contains(&proto) {
                    return Err(format!("pickle protocol {proto} (2 to 5 are read)"));
                }
            }
            0x95 => {
                input.u64()?; // FRAME: a length hint only
            }
            b'.' => {
                let obj = m.pop()?;
                return Ok(obj);
            }
            b'(' => m.push(Obj::Mark)?,
            b'N' => m.push(Obj::None)?,
            0x88 | 0x89 => m.push(Obj::Bool)?,
            b'K' => m.push(Obj::Int(i64::from(input.u8()?)))?,
            b'M' => m.push(Obj::Int(i64::from(input.u16()?)))?,
            b'J' => m.push(Obj::Int(i64::from(input.u32()? as i32)))?,
            0x8a => {
                let n = input.u8()?;
                if n > 8 {
                    return Err(format!("a LONG1 of {n} bytes at byte {at}"));
                }
                let bytes = input.text(u64::from(n), "LONG1")?;
                let mut v = [0u8; 8];
                v[..bytes.len()].copy_from_slice(&bytes);
                if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                    v[bytes.len()..].fill(0xff);
                }
                m.push(Obj::Int(i64::from_le_bytes(v)))?;
            }
            b'G' => {
                input.bytes::<8>()?;
                m.push(Obj::Float)?;
            }
            b'X' => {
                let n = u64::from(input.u32()?);
                m.push(Obj::Text(input.utf8(n, "str")?))?;
            }
            0x8c => {
                let n = u64::from(input.u8()?);
                m.push(Obj::Text(input.utf8(n, "str")?))?;
            }
            b'C' => {
                let n = u64::from(input.u8()?);
                m.push(Obj::Bytes(input.span(n)?))?;
            }
            b'B' => {
                let n = u64::from(input.u32()?);
                m.push(Obj::Bytes(input.span(n)?))?;
            }
            0x8e => {
                let n = input.u64()?;
                m.push(Obj::Bytes(input.span(n)?))?;
            }
            b'c' => {
                let module = input.line()?;
                let name = input.line()?;
                m.push(Obj::Global(Box::new((module, name))))?;
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                match (module, name) {
                    (Obj::Text(module), Obj::Text(name)) => {
                        m.push(Obj::Global(Box::new((module, name))))?
                    }
                    _ => return Err(format!("STACK_GLOBAL without two names at byte {at}")),
                }
            }
            b')' => m.tuple(Vec::new())?,
            b't' => {
                let items = m.pop_to_mark()?;
                m.tuple(items)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = (0..n).map(|_| m.pop()).collect::<Parse<Vec<_>>>()?;
                items.reverse();
                m.tuple(items)?;
            }
            b']' => m.push(Obj::List(Items::new(Vec::new())?))?,
            b'}' => m.push(Obj::Dict(Items::new(Vec::new())?))?,
            b'a' => {
                let v = m.pop()?;
                m.add_to_top(vec![v], false)?;
            }
            b'e' => {
                let items = m.pop_to_mark()?;
                m.add_to_top(items, false)?;
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                m.add_to_top(vec![k, v], true)?;
            }
            b'u' => {
                let items = m.pop_to_mark()?;
                m.add_to_top(items, true)?;
            }
            b'R' | b'b' | 0x81 => {
                let args = m.pop()?;
                let callable = m.pop()?;
                let pair = Items::new(vec![callable, args])?;
                m.push(if op == b'b' {
                    Obj::Build(pair)
                } else {
                    Obj::Call(pair)
                })?;
            }
            b'q' => m.memo_put(u64::from(input.u8()?))?,
            b'r' => m.memo_put(u64::from(input.u32()?))?,
            0x94 => m.memo_put(m.memo.len() as u64)?,
            b'h' => m.memo_get(u64::from(input.u8()?))?,
            b'j' => m.memo_get(u64::from(input.u32()?))?,
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} at byte {at} is not one NumPy's arrays use"
                ))
            }
        }
    }
}

/// An object array's records: the pickle must be NumPy's `_reconstruct` of a one-dimensional
/// array whose state holds `count` byte strings.
fn read_pickled_array<R: BufRead>(input: &mut Input<R>, count: u64) -> Parse<Vec<Span>> {
    let obj = unpickle(input)?;
    let not_array = |why: &str| format!("the pickle is not a NumPy array of bytes: {why}");
    let Obj::Build(build) = obj else {
        return Err(not_array(&format!("it is a {}", obj.kind())));
    };
    let [reconstruct, state] = <[Obj; 2]>::try_from(build.items)
        .map_err(|_| not_array("a BUILD without its two parts"))?;
    let Obj::Call(call) = reconstruct else {
        return Err(not_array("no _reconstruct call"));
    };
    match call.items.first() {
        Some(Obj::Global(g))
            if matches!(
                g.0.as_str(),
                "numpy.core.multiarray" | "numpy._core.multiarray"
            ) && g.1 == "_reconstruct" => {}
        _ => return Err(not_array("no numpy _reconstruct call")),
    }
    let Obj::Tuple(state) = state else {
        return Err(not_array("its state is not a tuple"));
    };
    let mut state = state.items.into_iter();
    match state.nth(1) {
        Some(Obj::Tuple(shape)) if matches!(shape.items[..], [Obj::Int(n)] if n as u64 == count) => {
        }
        _ => return Err(format!("the pickle's shape is not the header's ({count},)")),
    }
    let Some(Obj::List(list)) = state.nth(2) else {
        return Err(not_array("its state has no list of objects"));
    };
    if list.items.len() as u64 != count {
        return Err(format!(
            "the header's shape says {count} records, but the pickle holds {}",
            list.items.len()
        ));
    }
    list.items
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o {
            Obj::Bytes(span) => Ok(span),
            other => Err(format!("record {i} is a {}, not bytes", other.kind())),
        })
        .collect()
}

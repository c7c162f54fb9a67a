//! Reads the kernel declarations of a `.cu` file without a C++ compiler: a small preprocessor
//! (`#define` with parameters, `##`, `__VA_ARGS__`, `#include "..."` of files next to the
//! including one) expands the file, then the `REALM_KERNEL(name, max_threads, (params...))`
//! invocations and the `REALM_EXPORT constexpr` integer constants are parsed.
//!
//! Deliberately small: conditionals (`#if`) are not evaluated (both branches' `#define`s are seen,
//! the last one wins), so a kernel must not be declared inside `#if`. Whatever this misses the
//! real compilers catch: a kernel it did not see has no `realm_abi::<name>` parameter type and
//! fails to compile, one it saw that does not exist has no symbol and fails to link.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Ident(String),
    Number(String),
    Punct(String),
    /// String and character literals, kept whole.
    Literal(String),
}

impl Tok {
    pub fn text(&self) -> &str {
        match self {
            Tok::Ident(s) | Tok::Number(s) | Tok::Punct(s) | Tok::Literal(s) => s,
        }
    }

    fn is(&self, s: &str) -> bool {
        self.text() == s
    }
}

const PUNCT2: [&str; 14] = [
    "##", "::", "==", "!=", "<=", ">=", "&&", "||", "<<", ">>", "->", "++", "--", "+=",
];

/// Tokens of one logical line (continuations joined, comments removed by the caller).
fn tokenize(line: &str) -> Vec<Tok> {
    let b: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let s = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[s..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '.' || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Number(b[s..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let s = i;
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push(Tok::Literal(b[s..i].iter().collect()));
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            if PUNCT2.contains(&two.as_str()) {
                out.push(Tok::Punct(two));
                i += 2;
            } else {
                out.push(Tok::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    out
}

/// The file's logical lines: comments blanked, backslash continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut clean = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    if chars[i] == '\n' {
                        clean.push('\n');
                    }
                    i += 1;
                }
                i += 2;
                clean.push(' ');
            }
            (q @ ('"' | '\''), _) => {
                clean.push(q);
                i += 1;
                while i < chars.len() && chars[i] != q && chars[i] != '\n' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        clean.push(chars[i]);
                        i += 1;
                    }
                    clean.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() && chars[i] == q {
                    clean.push(q);
                    i += 1;
                }
            }
            (c, _) => {
                clean.push(c);
                i += 1;
            }
        }
    }
    clean
        .replace("\\\n", " ")
        .lines()
        .map(str::to_string)
        .collect()
}

#[derive(Clone, Debug)]
struct Macro {
    /// None for an object-like macro.
    params: Option<Vec<String>>,
    body: Vec<Tok>,
}

/// Macro names the preprocessor never expands: the declarations it is looking for.
const MARKERS: [&str; 2] = ["REALM_KERNEL", "REALM_EXPORT"];

#[derive(Default)]
struct Preprocessor {
    macros: HashMap<String, Macro>,
    included: HashSet<PathBuf>,
    /// The main file's unexpanded tokens and its includes' (for the constants).
    raw: Vec<Tok>,
}

impl Preprocessor {
    /// Processes `path`: records its macros; returns its text lines' tokens (not expanded).
    fn file(&mut self, path: &Path) -> Result<Vec<Tok>, String> {
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.included.insert(canon) {
            return Ok(Vec::new());
        }
        let text =
            fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut out = Vec::new();
        for line in logical_lines(&text) {
            let trimmed = line.trim_start();
            let Some(directive) = trimmed.strip_prefix('#') else {
                let toks = tokenize(&line);
                self.raw.extend(toks.iter().cloned());
                out.extend(toks);
                continue;
            };
            let directive = directive.trim_start();
            if let Some(rest) = directive.strip_prefix("define") {
                self.define(rest.trim_start());
            } else if let Some(rest) = directive.strip_prefix("undef") {
                self.macros.remove(rest.trim());
            } else if let Some(rest) = directive.strip_prefix("include") {
                let rest = rest.trim();
                // Only "local" includes next to the including file: the portability layer's
                // headers (found through -I) declare no kernels.
                if let Some(name) = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    let inc = dir.join(name);
                    if inc.is_file() {
                        self.file(&inc)?;
                    }
                }
            }
            // #if, #pragma, #error, ...: ignored (see the module documentation).
        }
        Ok(out)
    }

    fn define(&mut self, rest: &str) {
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        if MARKERS.contains(&name.as_str()) {
            return;
        }
        let after = &rest[name_end..];
        let (params, body) = if let Some(p) = after.strip_prefix('(') {
            let close = p.find(')').unwrap_or(p.len());
            let params = p[..close]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            (Some(params), &p[(close + 1).min(p.len())..])
        } else {
            (None, after)
        };
        self.macros.insert(
            name,
            Macro {
                params,
                body: tokenize(body),
            },
        );
    }

    fn expand(&self, toks: &[Tok], disabled: &HashSet<String>) -> Vec<Tok> {
        let mut out = Vec::with_capacity(toks.len());
        let mut i = 0;
        while i < toks.len() {
            let tok = &toks[i];
            i += 1;
            let Tok::Ident(name) = tok else {
                out.push(tok.clone());
                continue;
            };
            let Some(m) = self.macros.get(name).filter(|_| !disabled.contains(name)) else {
                out.push(tok.clone());
                continue;
            };
            let mut inner = disabled.clone();
            inner.insert(name.clone());
            match &m.params {
                None => out.extend(self.expand(&paste(&m.body), &inner)),
                Some(params) => {
                    if !toks.get(i).is_some_and(|t| t.is("(")) {
                        out.push(tok.clone());
                        continue;
                    }
                    let (args, next) = split_args(toks, i);
                    i = next;
                    let body = self.substitute(m, params, &args, disabled);
                    out.extend(self.expand(&body, &inner));
                }
            }
        }
        out
    }

    /// The macro's body with its parameters replaced (arguments expanded first unless they are
    /// operands of `##`), then pasted.
    fn substitute(
        &self,
        m: &Macro,
        params: &[String],
        args: &[Vec<Tok>],
        disabled: &HashSet<String>,
    ) -> Vec<Tok> {
        let arg_of = |name: &str| -> Option<Vec<Tok>> {
            if name == "__VA_ARGS__" {
                let fixed = params.len().saturating_sub(1);
                let rest: Vec<Tok> = args
                    .iter()
                    .skip(fixed)
                    .enumerate()
                    .flat_map(|(k, a)| {
                        let comma = (k > 0).then(|| Tok::Punct(",".into()));
                        comma.into_iter().chain(a.iter().cloned())
                    })
                    .collect();
                return Some(rest);
            }
            params
                .iter()
                .position(|p| p == name)
                .map(|k| args.get(k).cloned().unwrap_or_default())
        };
        let body = &m.body;
        let mut out = Vec::new();
        for (k, tok) in body.iter().enumerate() {
            let pasted =
                (k > 0 && body[k - 1].is("##")) || body.get(k + 1).is_some_and(|t| t.is("##"));
            match arg_of(tok.text()) {
                Some(arg) if pasted => out.extend(arg),
                Some(arg) => out.extend(self.expand(&arg, disabled)),
                None => out.push(tok.clone()),
            }
        }
        paste(&out)
    }
}

/// Applies `##`: the tokens on either side become one.
fn paste(toks: &[Tok]) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i].is("##") && !out.is_empty() && i + 1 < toks.len() {
            let left = out.pop().map(|t| t.text().to_string()).unwrap_or_default();
            let joined = left + toks[i + 1].text();
            out.extend(tokenize(&joined));
            i += 2;
        } else {
            out.push(toks[i].clone());
            i += 1;
        }
    }
    out
}

/// The comma-separated arguments of the invocation whose `(` is at `open`, and the index after
/// its `)`.
fn split_args(toks: &[Tok], open: usize) -> (Vec<Vec<Tok>>, usize) {
    let mut args = vec![Vec::new()];
    let mut depth = 0usize;
    let mut i = open;
    while i < toks.len() {
        let t = &toks[i];
        i += 1;
        match t.text() {
            "(" => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ")" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => {
                args.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(a) = args.last_mut() {
            a.push(t.clone());
        }
    }
    if args.len() == 1 && args[0].is_empty() {
        args.clear();
    }
    (args, i)
}

/// One kernel parameter: its C++ type tokens and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub ty: Vec<String>,
    pub name: String,
}

/// A `REALM_KERNEL` declaration after macro expansion.
#[derive(Clone, Debug)]
pub struct KernelDecl {
    pub name: String,
    pub params: Vec<Param>,
}

/// An integer constant: `[template <int P>] constexpr int|unsigned NAME = EXPR;`.
#[derive(Clone, Debug)]
pub struct ConstDecl {
    pub name: String,
    pub param: Option<String>,
    pub expr: Vec<Tok>,
    /// Marked `REALM_EXPORT`: visible to Rust.
    pub exported: bool,
}

pub struct Description {
    pub kernels: Vec<KernelDecl>,
    pub constants: Vec<ConstDecl>,
}

/// The kernels and integer constants of `path` (and the local headers it includes).
pub fn describe(path: &Path) -> Result<Description, String> {
    let mut pp = Preprocessor::default();
    let text = pp.file(path)?;
    let expanded = pp.expand(&text, &HashSet::new());
    let mut kernels = Vec::new();
    let mut i = 0;
    while i < expanded.len() {
        if expanded[i].is("REALM_KERNEL") && expanded.get(i + 1).is_some_and(|t| t.is("(")) {
            let (args, next) = split_args(&expanded, i + 1);
            kernels.push(kernel_decl(path, &args)?);
            i = next;
        } else {
            i += 1;
        }
    }
    let constants = constants(&pp, &pp.raw);
    Ok(Description { kernels, constants })
}

fn kernel_decl(path: &Path, args: &[Vec<Tok>]) -> Result<KernelDecl, String> {
    let where_ = || format!("{}: REALM_KERNEL", path.display());
    let [name, _max_threads, params] = args else {
        return Err(format!(
            "{}: expected (name, max_threads, (params...)), got {} arguments",
            where_(),
            args.len()
        ));
    };
    let name = match name.as_slice() {
        [Tok::Ident(n)] => n.clone(),
        other => {
            return Err(format!(
                "{}: the name {other:?} is not one identifier",
                where_()
            ))
        }
    };
    let inner = match params.as_slice() {
        [first, inner @ .., last] if first.is("(") && last.is(")") => inner,
        _ => {
            return Err(format!(
                "{}({name}): the parameters must be one parenthesised list",
                where_()
            ))
        }
    };
    // Split on commas outside <...> and (...).
    let mut list: Vec<Vec<Tok>> = vec![Vec::new()];
    let mut depth = 0i32;
    for t in inner {
        match t.text() {
            "<" | "(" => depth += 1,
            ">" | ")" => depth -= 1,
            ">>" => depth -= 2,
            "," if depth == 0 => {
                list.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(l) = list.last_mut() {
            l.push(t.clone());
        }
    }
    let mut out = Vec::new();
    for p in list.into_iter().filter(|p| !p.is_empty()) {
        let Some((Tok::Ident(pname), ty)) = p.split_last() else {
            return Err(format!("{}({name}): parameter {p:?} has no name", where_()));
        };
        out.push(Param {
            ty: ty.iter().map(|t| t.text().to_string()).collect(),
            name: pname.clone(),
        });
    }
    Ok(KernelDecl { name, params: out })
}

/// Every `constexpr int|unsigned` of the processed files, exported or not.
fn constants(pp: &Preprocessor, raw: &[Tok]) -> Vec<ConstDecl> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        // [template < int P >] [REALM_EXPORT] constexpr (int|unsigned) NAME = EXPR ;
        let start = i;
        let mut j = i;
        let mut param = None;
        if raw[j].is("template") {
            match &raw[j..(j + 5).min(raw.len())] {
                [_, lt, Tok::Ident(int), Tok::Ident(p), gt]
                    if lt.is("<") && int == "int" && gt.is(">") =>
                {
                    param = Some(p.clone());
                    j += 5;
                }
                _ => {
                    i += 1;
                    continue;
                }
            }
        }
        let exported = raw.get(j).is_some_and(|t| t.is("REALM_EXPORT"));
        if exported {
            j += 1;
        }
        let decl = raw.get(j..j + 4).filter(|w| {
            w[0].is("constexpr") && (w[1].is("int") || w[1].is("unsigned")) && w[3].is("=")
        });
        match (decl, raw.get(j + 2)) {
            (Some(_), Some(Tok::Ident(name))) => {
                let end = raw[j + 4..]
                    .iter()
                    .position(|t| t.is(";"))
                    .map_or(raw.len(), |p| j + 4 + p);
                let expr = pp.expand(&raw[j + 4..end], &HashSet::new());
                out.push(ConstDecl {
                    name: name.clone(),
                    param,
                    expr,
                    exported,
                });
                i = end + 1;
            }
            _ => i = start + 1,
        }
    }
    out
}

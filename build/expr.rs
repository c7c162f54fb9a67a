//! The integer constant expressions of `REALM_EXPORT` constants, translated to Rust: literals,
//! other constants (`kName`, `kName<expr>`), the template parameter, `+ - * / % << >>`,
//! comparisons, `&& || !`, `?:` and parentheses. Rust evaluates them in u32, as the kernels'
//! sizes are small non-negative integers.

use crate::cpp::{ConstDecl, Tok};
use std::collections::HashMap;

#[derive(Debug)]
enum Expr {
    Num(u64),
    /// A constant, with its template argument if it has one; or the template parameter.
    Name(String, Option<Box<Expr>>),
    Unary(String, Box<Expr>),
    Binary(String, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

struct Parser<'t> {
    toks: &'t [Tok],
    pos: usize,
    templates: &'t HashMap<String, bool>,
}

fn precedence(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" => 3,
        "<" | ">" | "<=" | ">=" => 4,
        "<<" | ">>" => 5,
        "+" | "-" => 6,
        "*" | "/" | "%" => 7,
        _ => return None,
    })
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(Tok::text)
    }

    fn expect(&mut self, s: &str) -> Result<(), String> {
        if self.peek() == Some(s) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{s}`, found {:?}", self.peek()))
        }
    }

    /// `cond ? a : b` (lowest), then binary operators by precedence. `stop_at_gt`: inside a
    /// template argument, `>` closes it.
    fn expr(&mut self, stop_at_gt: bool) -> Result<Expr, String> {
        let cond = self.binary(0, stop_at_gt)?;
        if self.peek() == Some("?") {
            self.pos += 1;
            let a = self.expr(stop_at_gt)?;
            self.expect(":")?;
            let b = self.expr(stop_at_gt)?;
            return Ok(Expr::Cond(Box::new(cond), Box::new(a), Box::new(b)));
        }
        Ok(cond)
    }

    fn binary(&mut self, min: u8, stop_at_gt: bool) -> Result<Expr, String> {
        let mut lhs = self.unary()?;
        while let Some(op) = self.peek().map(str::to_string) {
            if stop_at_gt && (op == ">" || op == ">>") {
                break;
            }
            let Some(p) = precedence(&op).filter(|&p| p > min) else {
                break;
            };
            self.pos += 1;
            let rhs = self.binary(p, stop_at_gt)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        let tok = self
            .toks
            .get(self.pos)
            .ok_or("unexpected end of expression")?
            .clone();
        self.pos += 1;
        match tok {
            Tok::Number(n) => {
                let digits = n.trim_end_matches(['u', 'U', 'l', 'L']);
                digits
                    .parse()
                    .map(Expr::Num)
                    .map_err(|_| format!("`{n}` is not a decimal integer"))
            }
            Tok::Ident(name) => {
                if self.templates.get(&name) == Some(&true) && self.peek() == Some("<") {
                    self.pos += 1;
                    let arg = self.expr(true)?;
                    self.expect(">")?;
                    Ok(Expr::Name(name, Some(Box::new(arg))))
                } else {
                    Ok(Expr::Name(name, None))
                }
            }
            Tok::Punct(p) if p == "(" => {
                let e = self.expr(false)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct(p) if p == "-" || p == "!" => Ok(Expr::Unary(p, Box::new(self.unary()?))),
            other => Err(format!("unexpected `{}`", other.text())),
        }
    }
}

/// Whether `e` is a boolean in Rust (a comparison or logical operation).
fn is_bool(e: &Expr) -> bool {
    match e {
        Expr::Binary(op, ..) => matches!(
            op.as_str(),
            "==" | "!=" | "<" | ">" | "<=" | ">=" | "&&" | "||"
        ),
        Expr::Unary(op, _) => op == "!",
        _ => false,
    }
}

/// The Rust name of C++ constant `kFooBar`: `FOO_BAR`, or `foo_bar` for a template (a const fn).
pub fn rust_name(cpp: &str, template: bool) -> String {
    let base = cpp
        .strip_prefix('k')
        .filter(|r| r.starts_with(|c: char| c.is_ascii_uppercase()))
        .unwrap_or(cpp);
    let mut snake = String::new();
    for (i, c) in base.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    if template {
        snake
    } else {
        snake.to_ascii_uppercase()
    }
}

fn rust(e: &Expr, param: Option<&str>, known: &HashMap<String, bool>) -> Result<String, String> {
    Ok(match e {
        Expr::Num(n) => format!("{n}"),
        Expr::Name(n, arg) => {
            if Some(n.as_str()) == param && arg.is_none() {
                n.to_ascii_lowercase()
            } else {
                match (known.get(n), arg) {
                    (Some(false), None) => rust_name(n, false),
                    (Some(true), Some(a)) => {
                        format!("{}({})", rust_name(n, true), rust(a, param, known)?)
                    }
                    _ => return Err(format!("`{n}` is not an integer constant of the kernels")),
                }
            }
        }
        Expr::Unary(op, a) => {
            let ra = rust(a, param, known)?;
            match (op.as_str(), is_bool(a)) {
                ("!", true) => format!("(!{ra})"),
                ("!", false) => format!("({ra} == 0)"),
                _ => return Err(format!("`{op}` on an unsigned constant")),
            }
        }
        Expr::Binary(op, a, b) => format!(
            "({} {op} {})",
            rust(a, param, known)?,
            rust(b, param, known)?
        ),
        Expr::Cond(c, a, b) => {
            let rc = rust(c, param, known)?;
            let rc = if is_bool(c) {
                rc
            } else {
                format!("({rc} != 0)")
            };
            format!(
                "(if {rc} {{ {} }} else {{ {} }})",
                rust(a, param, known)?,
                rust(b, param, known)?
            )
        }
    })
}

/// Rust items for the exported constants of one file and the constants they use: `pub const`
/// for exported ones, private otherwise; templates become `const fn`s of their parameter.
pub fn rust_constants(decls: &[ConstDecl]) -> Result<String, String> {
    let known: HashMap<String, bool> = decls
        .iter()
        .map(|d| (d.name.clone(), d.param.is_some()))
        .collect();
    let by_name: HashMap<&str, &ConstDecl> = decls.iter().map(|d| (d.name.as_str(), d)).collect();
    // The exported constants and everything they refer to, in declaration order.
    let mut needed: Vec<&str> = decls
        .iter()
        .filter(|d| d.exported)
        .map(|d| d.name.as_str())
        .collect();
    let mut k = 0;
    while k < needed.len() {
        let d = by_name[needed[k]];
        for t in &d.expr {
            if let Tok::Ident(n) = t {
                if by_name.contains_key(n.as_str()) && !needed.contains(&n.as_str()) {
                    needed.push(n);
                }
            }
        }
        k += 1;
    }
    let mut out = String::new();
    for d in decls.iter().filter(|d| needed.contains(&d.name.as_str())) {
        let mut p = Parser {
            toks: &d.expr,
            pos: 0,
            templates: &known,
        };
        let e = p
            .expr(false)
            .map_err(|m| format!("constant `{}`: {m}", d.name))?;
        if p.pos != d.expr.len() {
            return Err(format!("constant `{}`: trailing tokens", d.name));
        }
        let body = rust(&e, d.param.as_deref(), &known)
            .map_err(|m| format!("constant `{}`: {m}", d.name))?;
        let vis = if d.exported { "pub " } else { "" };
        let source: String = d.expr.iter().map(Tok::text).collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "/// `{}` = `{source}` in the kernel source.\n",
            d.name
        ));
        out.push_str("#[allow(clippy::identity_op, clippy::erasing_op, unused_parens)]\n");
        match &d.param {
            None => out.push_str(&format!(
                "{vis}const {}: u32 = {body};\n",
                rust_name(&d.name, false)
            )),
            Some(p) => out.push_str(&format!(
                "{vis}const fn {}({}: u32) -> u32 {{\n    {body}\n}}\n",
                rust_name(&d.name, true),
                p.to_ascii_lowercase()
            )),
        }
    }
    Ok(out)
}

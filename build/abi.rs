//! The Rust↔kernel ABI generated from the `REALM_KERNEL` declarations:
//!
//! - kernels of one `.cu` file whose parameters are equal once the element type is abstracted
//!   form a *family*: one parameter struct, `realm_abi::<Family><T>` in C++ (`realm_abi.h`) and
//!   `#[repr(C)] <Family><'a, T, A>` in Rust (`kernels_abi.rs`), with layout checks on both sides
//!   (`static_assert` of every size and offset in C++, `const` asserts in Rust) computed here;
//! - a kernel's name is `<family>[_<variant>][_<dtype>]`: the dtype suffix (`f32`, `f16`, `bf16`)
//!   is the element type `T` when the parameters use it; the variants of a file form its Rust
//!   `Variant` enum;
//! - the kernel table (name, module, the emulator's launcher) and each family's lookup from
//!   (variant, dtype) to its kernel;
//! - the `REALM_EXPORT` integer constants, as Rust `const`s and `const fn`s.

use crate::cpp::{ConstDecl, KernelDecl, Param};
use crate::expr::rust_constants;
use std::fmt::Write as _;

/// One `.cu` file: one CUDA module (fatbin), one Rust module of the ABI.
pub struct Module {
    /// File stem, e.g. `doc_softmax`.
    pub stem: String,
    /// The path shown in documentation, e.g. `kernels/doc_softmax.cu`.
    pub path: String,
    /// Compiled for the emulator only (the deliberately broken kernels).
    pub emulator_only: bool,
    pub kernels: Vec<KernelDecl>,
    pub constants: Vec<ConstDecl>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

    fn suffix(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    fn scalar(self) -> Scalar {
        match self {
            Dtype::F32 => Scalar::F32,
            Dtype::F16 => Scalar::F16,
            Dtype::Bf16 => Scalar::Bf16,
        }
    }

    fn candle(self) -> &'static str {
        match self {
            Dtype::F32 => "DType::F32",
            Dtype::F16 => "DType::F16",
            Dtype::Bf16 => "DType::BF16",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    /// The family's element type.
    T,
    U16,
    U32,
    I32,
    U64,
    F32,
    F64,
    F16,
    Bf16,
}

impl Scalar {
    fn parse(tokens: &[String]) -> Option<Scalar> {
        let words: Vec<&str> = tokens.iter().map(String::as_str).collect();
        Some(match words.as_slice() {
            ["T"] => Scalar::T,
            ["unsigned", "short"] | ["uint16_t"] => Scalar::U16,
            ["unsigned"] | ["unsigned", "int"] | ["uint32_t"] => Scalar::U32,
            ["int"] | ["int32_t"] => Scalar::I32,
            ["unsigned", "long", "long"] | ["uint64_t"] => Scalar::U64,
            ["float"] => Scalar::F32,
            ["double"] => Scalar::F64,
            ["__half"] => Scalar::F16,
            ["__nv_bfloat16"] => Scalar::Bf16,
            _ => return None,
        })
    }

    fn cpp(self) -> &'static str {
        match self {
            Scalar::T => "T",
            Scalar::U16 => "unsigned short",
            Scalar::U32 => "unsigned",
            Scalar::I32 => "int",
            Scalar::U64 => "unsigned long long",
            Scalar::F32 => "float",
            Scalar::F64 => "double",
            Scalar::F16 => "__half",
            Scalar::Bf16 => "__nv_bfloat16",
        }
    }

    fn rust(self) -> &'static str {
        match self {
            Scalar::T => "T",
            Scalar::U16 => "u16",
            Scalar::U32 => "u32",
            Scalar::I32 => "i32",
            Scalar::U64 => "u64",
            Scalar::F32 => "f32",
            Scalar::F64 => "f64",
            Scalar::F16 => "half::f16",
            Scalar::Bf16 => "half::bf16",
        }
    }

    /// Size (= alignment) in bytes, with T instantiated as `dtype`.
    fn size(self, dtype: Option<Dtype>) -> usize {
        match self {
            Scalar::T => dtype.map_or(4, |d| d.scalar().size(None)),
            Scalar::U16 | Scalar::F16 | Scalar::Bf16 => 2,
            Scalar::U32 | Scalar::I32 | Scalar::F32 => 4,
            Scalar::U64 | Scalar::F64 => 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `gptr<const X>` / `gptr<X>`.
    Ptr {
        mutable: bool,
        elem: Scalar,
    },
    Value(Scalar),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    name: String,
    kind: Kind,
}

/// The two layouts a parameter struct has: pointers are `gptr<T>` = 3 pointers under the
/// emulator (the bounds travel with the pointer) and `T*` on the GPU.
#[derive(Clone, Copy)]
enum Layout {
    Emulator,
    Cuda,
}

impl Layout {
    fn ptr(self) -> (usize, usize) {
        match self {
            Layout::Emulator => (24, 8),
            Layout::Cuda => (8, 8),
        }
    }
}

/// `(size, [offset of each field])` of the C struct.
fn layout(fields: &[Field], dtype: Option<Dtype>, l: Layout) -> (usize, Vec<usize>) {
    let mut offset = 0usize;
    let mut max_align = 1usize;
    let mut offsets = Vec::new();
    for f in fields {
        let (size, align) = match f.kind {
            Kind::Ptr { .. } => l.ptr(),
            Kind::Value(s) => (s.size(dtype), s.size(dtype)),
        };
        offset = offset.next_multiple_of(align);
        offsets.push(offset);
        offset += size;
        max_align = max_align.max(align);
    }
    (offset.next_multiple_of(max_align), offsets)
}

/// A kernel with its name split into family stem, variant and dtype.
struct Member {
    name: String,
    dtype: Option<Dtype>,
    variant: Option<String>,
}

struct Family {
    /// e.g. `doc_softmax_fwd`
    base: String,
    /// e.g. `DocSoftmaxFwd`
    type_name: String,
    generic: bool,
    fields: Vec<Field>,
    members: Vec<Member>,
}

fn camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

const RUST_KEYWORDS: [&str; 38] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while",
];

fn rust_field(name: &str) -> String {
    if RUST_KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

fn parse_field(kernel: &str, p: &Param) -> Result<Field, String> {
    let t = &p.ty;
    let kind = if t.first().map(String::as_str) == Some("gptr")
        && t.get(1).map(String::as_str) == Some("<")
        && t.last().map(String::as_str) == Some(">")
    {
        let inner = &t[2..t.len() - 1];
        let (mutable, base) = match inner.split_first() {
            Some((c, rest)) if c == "const" => (false, rest),
            _ => (true, inner),
        };
        Scalar::parse(base).map(|elem| Kind::Ptr { mutable, elem })
    } else {
        Scalar::parse(t).map(Kind::Value)
    };
    if p.name.starts_with("realm_") {
        return Err(format!(
            "kernel `{kernel}`, parameter `{}`: names starting with `realm_` are reserved for the portability layer",
            p.name
        ));
    }
    let kind = kind.ok_or_else(|| {
        format!(
            "kernel `{kernel}`, parameter `{}`: type `{}` has no Rust mirror (gptr<[const] X> or a scalar X of unsigned, int, float, double, __half, __nv_bfloat16, unsigned short, unsigned long long)",
            p.name,
            t.join(" ")
        )
    })?;
    Ok(Field {
        name: p.name.clone(),
        kind,
    })
}

impl Field {
    fn scalar(&self) -> Scalar {
        match self.kind {
            Kind::Ptr { elem, .. } => elem,
            Kind::Value(s) => s,
        }
    }

    /// The same field with its scalar type replaced by the element type `T`.
    fn as_t(&self) -> Field {
        let kind = match self.kind {
            Kind::Ptr { mutable, .. } => Kind::Ptr {
                mutable,
                elem: Scalar::T,
            },
            Kind::Value(_) => Kind::Value(Scalar::T),
        };
        Field {
            name: self.name.clone(),
            kind,
        }
    }
}

/// The element type a kernel is instantiated for: its dtype suffix, when its parameters use it.
fn dtype_of(k: &KernelDecl) -> Option<(Dtype, String)> {
    Dtype::ALL.into_iter().find_map(|d| {
        let stem = k.name.strip_suffix(&format!("_{}", d.suffix()))?;
        let uses = k
            .params
            .iter()
            .any(|p| p.ty.iter().any(|w| w == d.scalar().cpp()));
        uses.then(|| (d, stem.to_string()))
    })
}

/// Kernels with equal parameters: (fields, dtype-generic, [(name, stem, dtype)]).
type Group = (Vec<Field>, bool, Vec<(String, String, Option<Dtype>)>);

fn families(m: &Module) -> Result<Vec<Family>, String> {
    // Each kernel's parameters as declared, its stem and dtype.
    let mut kernels = Vec::new();
    for k in &m.kernels {
        let (dtype, stem) = match dtype_of(k) {
            Some((d, s)) => (Some(d), s),
            None => (None, k.name.clone()),
        };
        let fields = k
            .params
            .iter()
            .map(|p| parse_field(&k.name, p))
            .collect::<Result<Vec<_>, _>>()?;
        if !fields.iter().any(|f| matches!(f.kind, Kind::Ptr { .. })) {
            return Err(format!(
                "kernel `{}` has no buffer parameter (gptr<...>)",
                k.name
            ));
        }
        kernels.push((k.name.clone(), stem, dtype, fields));
    }
    // A parameter is the element type `T` when, in every dtype instance of the kernel's stem, it
    // has that instance's type (so `float alpha` stays f32 beside the f16 and bf16 kernels).
    let mut abstracted = Vec::new();
    for (name, stem, dtype, fields) in &kernels {
        let siblings: Vec<&(String, String, Option<Dtype>, Vec<Field>)> = kernels
            .iter()
            .filter(|(_, s, d, _)| s == stem && d.is_some() == dtype.is_some())
            .collect();
        let differ = |other: &str| {
            format!(
                "{}: kernels `{name}` and `{other}` are instances of `{stem}` but their parameters differ beyond the element type",
                m.path
            )
        };
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let is_t = siblings.iter().all(|(_, _, d, of)| {
                d.zip(of.get(i))
                    .is_some_and(|(d, o)| o.scalar() == d.scalar())
            });
            for (other, _, _, of) in &siblings {
                let Some(o) = of.get(i).filter(|_| of.len() == fields.len()) else {
                    return Err(differ(other));
                };
                let same_kind = match (o.kind, f.kind) {
                    (Kind::Ptr { mutable: a, .. }, Kind::Ptr { mutable: b, .. }) => a == b,
                    (Kind::Value(_), Kind::Value(_)) => true,
                    _ => false,
                };
                if o.name != f.name || !same_kind || (!is_t && o.scalar() != f.scalar()) {
                    return Err(differ(other));
                }
            }
            out.push(if is_t { f.as_t() } else { f.clone() });
        }
        abstracted.push((name.clone(), stem.clone(), *dtype, out));
    }
    // Group by parameters (element type abstracted), in declaration order.
    let mut groups: Vec<Group> = Vec::new();
    for (name, stem, dtype, fields) in abstracted {
        let generic = dtype.is_some();
        match groups
            .iter_mut()
            .find(|(f, g, _)| *f == fields && *g == generic)
        {
            Some((_, _, members)) => members.push((name, stem, dtype)),
            None => groups.push((fields, generic, vec![(name, stem, dtype)])),
        }
    }
    let mut out = Vec::new();
    for (fields, generic, members) in groups {
        let stems: Vec<&str> = members.iter().map(|(_, s, _)| s.as_str()).collect();
        let base = if stems.iter().all(|s| *s == stems[0]) {
            stems[0].to_string()
        } else {
            // The longest common prefix that ends at a `_`.
            let first = stems[0];
            let mut len = first.len();
            for s in &stems[1..] {
                len = len.min(
                    first
                        .bytes()
                        .zip(s.bytes())
                        .take_while(|(a, b)| a == b)
                        .count(),
                );
            }
            let cut = first[..len].rfind('_').ok_or_else(|| {
                format!(
                    "{}: kernels {stems:?} share their parameters but no `<family>_` name prefix",
                    m.path
                )
            })?;
            first[..cut].to_string()
        };
        let mut ms = Vec::new();
        for (name, stem, dtype) in members {
            let variant = stem.strip_prefix(&base).and_then(|r| r.strip_prefix('_'));
            if variant.is_none() && stem != base {
                return Err(format!(
                    "{}: kernel `{name}` does not start with `{base}_`",
                    m.path
                ));
            }
            ms.push(Member {
                name,
                dtype,
                variant: variant.map(str::to_string),
            });
        }
        if ms.iter().any(|x| x.variant.is_none()) && ms.iter().any(|x| x.variant.is_some()) {
            return Err(format!(
                "{}: family `{base}` mixes a kernel without a variant with variants ({}); rename them `{base}_<variant>`",
                m.path,
                ms.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        for (i, a) in ms.iter().enumerate() {
            if ms[..i]
                .iter()
                .any(|b| b.variant == a.variant && b.dtype == a.dtype)
            {
                return Err(format!("{}: kernel `{}` is declared twice", m.path, a.name));
            }
        }
        out.push(Family {
            type_name: camel(&base),
            base,
            generic,
            fields,
            members: ms,
        });
    }
    for (i, f) in out.iter().enumerate() {
        if out[..i].iter().any(|g| g.type_name == f.type_name) {
            return Err(format!(
                "{}: two families named `{}` (same name prefix, different parameters): give the kernels distinct names",
                m.path, f.base
            ));
        }
    }
    Ok(out)
}

/// The generated Rust (`kernels_abi.rs`) and C++ (`realm_abi.h`).
pub struct Generated {
    pub rust: String,
    pub header: String,
}

pub fn generate(modules: &[Module], fatbins: Option<&str>) -> Result<Generated, String> {
    let mut rust = String::from(
        "// Generated by build.rs from the REALM_KERNEL declarations of kernels/*.cu; do not edit.\n\n",
    );
    let mut header = String::from(
        "// Generated by build.rs from the REALM_KERNEL declarations of kernels/*.cu; do not edit.\n\
         // Every kernel takes its family's parameter struct; the Rust mirror is in OUT_DIR/kernels_abi.rs\n\
         // and both sides check the layout computed by build.rs.\n\
         #pragma once\n#include <cstddef>\n\n",
    );
    let cfg_of = |m: &Module| {
        if m.emulator_only {
            "#[cfg(feature = \"emulate\")]\n"
        } else {
            ""
        }
    };

    rust.push_str(
        "/// `realm_emu_launch_<name>(config, params)`: runs the grid; 0, or non-zero with a message.\n\
         pub type EmuEntry = unsafe extern \"C\" fn(*const EmuLaunch, *const std::ffi::c_void) -> i32;\n\n",
    );
    // The module table.
    rust.push_str("/// A kernel module: one `kernels/<name>.cu`, one fatbin on the GPU.\n");
    rust.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Module {\n");
    for m in modules {
        let _ = writeln!(
            rust,
            "    /// `{}`\n    {}{},",
            m.path,
            cfg_of(m).replace('\n', "\n    "),
            camel(&m.stem)
        );
    }
    rust.push_str("}\n\nimpl Module {\n    /// The kernel source.\n    pub fn file(self) -> &'static str {\n        match self {\n");
    for m in modules {
        let _ = writeln!(
            rust,
            "            {}Module::{} => \"{}\",",
            cfg_of(m).replace('\n', " "),
            camel(&m.stem),
            m.path
        );
    }
    rust.push_str("        }\n    }\n");
    if let Some(f) = fatbins {
        rust.push_str("\n    /// The module's fatbin (SASS for sm_80 and sm_90, PTX for compute_90); None for the emulator's own.\n    #[cfg(feature = \"cuda\")]\n    pub(crate) fn fatbin(self) -> Option<&'static [u8]> {\n        match self {\n");
        for m in modules {
            let value = if m.emulator_only {
                "None".to_string()
            } else {
                format!("Some(fatbins::{})", m.stem.to_uppercase())
            };
            let _ = writeln!(
                rust,
                "            {}Module::{} => {value},",
                cfg_of(m).replace('\n', " "),
                camel(&m.stem)
            );
        }
        rust.push_str("        }\n    }\n");
        let _ = write!(rust, "}}\n\n#[cfg(feature = \"cuda\")]\nmod fatbins {{\n    /// A fatbin image with the alignment the CUDA driver and tools expect.\n    #[repr(C, align(16))]\n    pub struct Aligned<T: ?Sized>(pub T);\n\n{f}}}\n");
    } else {
        rust.push_str("}\n");
    }

    let mut all = Vec::new();
    for m in modules {
        let fams = families(m)?;
        let mut variants: Vec<String> = Vec::new();
        for f in &fams {
            for x in &f.members {
                if let Some(v) = &x.variant {
                    if !variants.contains(v) {
                        variants.push(v.clone());
                    }
                }
            }
        }
        let mut body = String::new();
        body.push_str("use super::*;\n\n");
        body.push_str(&rust_constants(&m.constants).map_err(|e| format!("{}: {e}", m.path))?);
        if !variants.is_empty() {
            let _ = write!(
                body,
                "\n/// The kernel variants of `{}`: the part of a kernel's name between its family and its\n/// element type.\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Variant {{\n",
                m.path
            );
            for v in &variants {
                let _ = writeln!(
                    body,
                    "    /// The kernels whose name has `_{v}` after the family.\n    {},",
                    camel(v)
                );
            }
            body.push_str("}\n");
        }
        let mut table = Vec::new();
        for f in &fams {
            gen_family(m, f, &mut table, &mut body, &mut header);
        }
        let _ = write!(
            body,
            "\n/// Every kernel of `{}`.\npub static KERNELS: [Kernel; {}] = [\n",
            m.path,
            table.len()
        );
        for name in &table {
            let _ = writeln!(
                body,
                "    Kernel {{\n        name: \"{name}\",\n        module: Module::{},\n        #[cfg(feature = \"emulate\")]\n        emu: launchers::realm_emu_launch_{name},\n    }},",
                camel(&m.stem)
            );
        }
        body.push_str("];\n\n#[cfg(feature = \"emulate\")]\nmod launchers {\n    extern \"C\" {\n");
        for name in &table {
            let _ = writeln!(
                body,
                "        pub fn realm_emu_launch_{name}(cfg: *const super::EmuLaunch, params: *const std::ffi::c_void) -> i32;"
            );
        }
        body.push_str("    }\n}\n");
        let _ = write!(
            rust,
            "\n/// `{}`\n{}pub mod {} {{\n{}}}\n",
            m.path,
            cfg_of(m),
            m.stem,
            indent(&body)
        );
        all.push((m, table.len()));
    }
    rust.push_str("\n/// Every kernel of every module: the kernel-name table.\npub fn all_kernels() -> impl Iterator<Item = &'static Kernel> {\n    let modules: Vec<&'static [Kernel]> = vec![\n");
    for (m, _) in &all {
        let _ = writeln!(
            rust,
            "        {}&{}::KERNELS,",
            cfg_of(m).replace('\n', " "),
            m.stem
        );
    }
    rust.push_str("    ];\n    modules.into_iter().flatten()\n}\n");
    Ok(Generated { rust, header })
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn gen_family(
    m: &Module,
    f: &Family,
    table: &mut Vec<String>,
    rust: &mut String,
    header: &mut String,
) {
    let names: Vec<&str> = f.members.iter().map(|x| x.name.as_str()).collect();
    let (generics, args) = if f.generic {
        ("<'a, T: Element, A: Abi>", "<'_, T, A>")
    } else {
        ("<'a, A: Abi>", "<'_, A>")
    };
    let _ = write!(
        rust,
        "\n/// Parameters of the `{}` kernels of `{}`: {}.\n#[repr(C)]\npub struct {}{generics} {{\n",
        f.base,
        m.path,
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        f.type_name
    );
    for fl in &f.fields {
        let ty = match fl.kind {
            Kind::Ptr {
                mutable: false,
                elem,
            } => format!("A::Ptr<'a, {}>", elem.rust()),
            Kind::Ptr {
                mutable: true,
                elem,
            } => format!("A::PtrMut<'a, {}>", elem.rust()),
            Kind::Value(s) => s.rust().to_string(),
        };
        let what = match fl.kind {
            Kind::Ptr { mutable: false, .. } => "device memory, read only",
            Kind::Ptr { mutable: true, .. } => "device memory the kernel may write",
            Kind::Value(_) => "a value",
        };
        let _ = writeln!(
            rust,
            "    /// The kernel parameter `{}`: {what}.\n    pub {}: {ty},",
            fl.name,
            rust_field(&fl.name)
        );
    }
    rust.push_str("}\n\n");

    // Lookup from (variant, dtype) to the kernel.
    let has_variants = f.members.iter().any(|x| x.variant.is_some());
    let impl_generics = if f.generic {
        "<T: Element, A: Abi>"
    } else {
        "<A: Abi>"
    };
    let _ = write!(
        rust,
        "impl{impl_generics} Params<A> for {}{args} {{\n    type Variant = {};\n    const FAMILY: &'static str = \"{}\";\n    const DTYPE: Option<DType> = {};\n\n    #[allow(unreachable_patterns)]\n    fn kernel(variant: Self::Variant) -> Option<&'static Kernel> {{\n",
        f.type_name,
        if has_variants { "Variant" } else { "()" },
        f.base,
        if f.generic { "Some(T::DTYPE)" } else { "None" }
    );
    if !has_variants {
        rust.push_str("        let () = variant;\n");
    }
    if !has_variants && !f.generic {
        // One kernel (a second one would have been reported as declared twice).
        let _ = writeln!(rust, "        Some(&KERNELS[{}])\n    }}\n}}", table.len());
        table.push(f.members[0].name.clone());
    } else {
        let scrutinee = match (has_variants, f.generic) {
            (true, true) => "(variant, T::DTYPE)",
            (true, false) => "variant",
            _ => "T::DTYPE",
        };
        let _ = writeln!(rust, "        match {scrutinee} {{");
        for x in &f.members {
            let v = x.variant.as_ref().map(|v| format!("Variant::{}", camel(v)));
            let d = x.dtype.map(Dtype::candle);
            let pat = match (v, d) {
                (Some(v), Some(d)) => format!("({v}, {d})"),
                (Some(v), None) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => "()".to_string(),
            };
            let _ = writeln!(
                rust,
                "            {pat} => Some(&KERNELS[{}]),",
                table.len()
            );
            table.push(x.name.clone());
        }
        rust.push_str("            _ => None,\n        }\n    }\n}\n");
    }

    // C++: the struct template (or struct), one alias per kernel and its argument list.
    let _ = write!(
        header,
        "// {}: {}\nnamespace realm_abi {{\n",
        m.path,
        names.join(", ")
    );
    if f.generic {
        header.push_str("template <typename T>\n");
    }
    let _ = writeln!(header, "struct {} {{", f.type_name);
    for fl in &f.fields {
        let ty = match fl.kind {
            Kind::Ptr {
                mutable: false,
                elem,
            } => format!("gptr<const {}>", elem.cpp()),
            Kind::Ptr {
                mutable: true,
                elem,
            } => format!("gptr<{}>", elem.cpp()),
            Kind::Value(s) => s.cpp().to_string(),
        };
        let _ = writeln!(header, "  {ty} {};", fl.name);
    }
    header.push_str("};\n");
    for x in &f.members {
        let inst = match x.dtype {
            Some(d) => format!("{}<{}>", f.type_name, d.scalar().cpp()),
            None => f.type_name.clone(),
        };
        let _ = writeln!(header, "using {} = {inst};", x.name);
    }
    header.push_str("}  // namespace realm_abi\n");
    for x in &f.members {
        let fields: Vec<String> = f
            .fields
            .iter()
            .map(|fl| format!("(realm_s).{}", fl.name))
            .collect();
        let _ = writeln!(
            header,
            "#define REALM_ABI_ARGS_{}(realm_s) {}",
            x.name,
            fields.join(", ")
        );
    }

    // Layout checks of every instance, for both layouts, on both sides.
    let dtypes: Vec<Option<Dtype>> = {
        let mut d: Vec<Option<Dtype>> = f.members.iter().map(|x| x.dtype).collect();
        d.sort();
        d.dedup();
        d
    };
    rust.push_str("const _: () = {\n");
    for (layout_kind, abi, guard) in [
        (Layout::Emulator, "EmuAbi", "#if !defined(__CUDACC__)"),
        (Layout::Cuda, "CudaAbi", "#if defined(__CUDACC__)"),
    ] {
        let _ = writeln!(header, "{guard}");
        for d in &dtypes {
            let (size, offsets) = layout(&f.fields, *d, layout_kind);
            let rust_ty = match d {
                Some(d) => format!("{}<'static, {}, {abi}>", f.type_name, d.scalar().rust()),
                None => format!("{}<'static, {abi}>", f.type_name),
            };
            let cpp_ty = f
                .members
                .iter()
                .find(|x| x.dtype == *d)
                .map(|x| format!("realm_abi::{}", x.name))
                .unwrap_or_default();
            let _ = writeln!(
                rust,
                "    assert!(std::mem::size_of::<{rust_ty}>() == {size}, \"{} size\");",
                f.base
            );
            let _ = writeln!(
                header,
                "static_assert(sizeof({cpp_ty}) == {size}, \"{cpp_ty}: size differs from the Rust mirror\");"
            );
            for (fl, off) in f.fields.iter().zip(&offsets) {
                let _ = writeln!(
                    rust,
                    "    assert!(std::mem::offset_of!({rust_ty}, {}) == {off}, \"{}.{}\");",
                    rust_field(&fl.name),
                    f.base,
                    fl.name
                );
                let _ = writeln!(
                    header,
                    "static_assert(offsetof({cpp_ty}, {}) == {off}, \"{cpp_ty}::{}: offset differs from the Rust mirror\");",
                    fl.name, fl.name
                );
            }
        }
        header.push_str("#endif\n");
    }
    rust.push_str("};\n");
    header.push('\n');
}

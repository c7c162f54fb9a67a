//! Generates the Rust↔kernel ABI from the kernel sources and compiles the kernels of `kernels/`.
//!
//! - always: `kernels_abi.rs` (Rust) and `realm_abi.h` (C++) in OUT_DIR, from the `REALM_KERNEL`
//!   declarations and `REALM_EXPORT` constants of `kernels/*.cu` (see `abi.rs`); no compiler
//!   needed, so the ABI types exist in every build.
//! - feature `cuda`: nvcc turns every `kernels/*.cu` into a fatbin (SASS for sm_80 and sm_90, PTX
//!   for compute_90), embedded by `src/kernels.rs` with `include_bytes!`. Each kernel's
//!   `-Xptxas -v` report is kept in OUT_DIR, and the build fails when a kernel spills registers or
//!   has a stack frame, unless `kernels/ptxas-allow.txt` lists it with a reason.
//! - feature `emulate`: the same sources compiled as host C++ against the emulator runtime
//!   (`kernels/emulator/`), plus the deliberately broken kernels the emulator's tests use.
//!
//! Without either feature this script needs no CUDA and no C++ compiler.

mod abi;
mod cpp;
mod expr;

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str =
    "run `eval \"$(scripts/install-cuda-toolchain.sh)\"` (CUDA 13.0 compiler from PyPI), \
     or set NVCC / CUDA_HOME to an existing CUDA 12.x/13.x toolkit";

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kernels = manifest.join("kernels");
    let sources = cu_files(&kernels);
    let faults = cu_files(&kernels.join("emulator").join("faults"));

    let mut modules = Vec::new();
    for (src, emulator_only) in sources
        .iter()
        .map(|s| (s, false))
        .chain(faults.iter().map(|s| (s, true)))
    {
        let d = cpp::describe(src).unwrap_or_else(|e| panic!("{e}"));
        let rel = src.strip_prefix(&manifest).unwrap_or(src);
        modules.push(abi::Module {
            stem: stem(src),
            path: rel.display().to_string(),
            emulator_only,
            kernels: d.kernels,
            constants: d.constants,
        });
    }
    // The header first: both compilers include it.
    let generated = abi::generate(&modules, None).unwrap_or_else(|e| panic!("kernel ABI: {e}"));
    write_if_changed(&out.join("realm_abi.h"), &generated.header);

    let fatbins = if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        Some(build_cuda(&kernels, &sources, &out))
    } else {
        None
    };
    if env::var_os("CARGO_FEATURE_EMULATE").is_some() {
        build_emulator(&kernels, &sources, &faults, &out);
    }
    let generated =
        abi::generate(&modules, fatbins.as_deref()).unwrap_or_else(|e| panic!("kernel ABI: {e}"));
    write_if_changed(&out.join("kernels_abi.rs"), &generated.rust);
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes `text` unless the file already holds it (so that nothing downstream rebuilds).
fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The kernel families: every `.cu` directly in `dir`, sorted.
fn cu_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
}

fn find_nvcc() -> PathBuf {
    if let Some(p) = env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            let p = PathBuf::from(home).join("bin").join("nvcc");
            if p.is_file() {
                return p;
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("feature `cuda` needs nvcc, which was not found through NVCC, CUDA_HOME, CUDA_PATH or PATH: {INSTALL_HINT}");
}

/// Compiles every family to a fatbin; returns the Rust statics that embed them.
fn build_cuda(kernels: &Path, sources: &[PathBuf], out: &Path) -> String {
    let nvcc = find_nvcc();
    let include = kernels.join("include");
    let allow = read_allow_list(&kernels.join("ptxas-allow.txt"));

    // One nvcc per family, in parallel: each runs ptxas twice (sm_80, sm_90).
    let results: Vec<(String, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let nvcc = &nvcc;
                let include = &include;
                s.spawn(move || {
                    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
                    let fatbin = out.join(format!("{stem}.fatbin"));
                    let output = Command::new(nvcc)
                        .args(["-fatbin", "-O3", "-lineinfo", "-std=c++17", "-Xptxas", "-v"])
                        .args(["-gencode", "arch=compute_80,code=sm_80"])
                        .args(["-gencode", "arch=compute_90,code=sm_90"])
                        .args(["-gencode", "arch=compute_90,code=compute_90"])
                        .arg("-I")
                        .arg(include)
                        .arg("-I")
                        .arg(out)
                        .arg("-o")
                        .arg(&fatbin)
                        .arg(src)
                        .output();
                    let result = match output {
                        Err(e) => Err(format!("running {}: {e}; {INSTALL_HINT}", nvcc.display())),
                        Ok(o) => {
                            let report = String::from_utf8_lossy(&o.stderr).into_owned();
                            if o.status.success() {
                                Ok(report)
                            } else {
                                Err(format!("nvcc failed on {}:\n{report}", src.display()))
                            }
                        }
                    };
                    (stem, result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("nvcc thread"))
            .collect()
    });

    let mut generated = String::new();
    let mut failures = Vec::new();
    for (stem, result) in results {
        let report = match result {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        fs::write(out.join(format!("{stem}.ptxas.txt")), &report).expect("writing ptxas report");
        for (function, arch, stack, spills) in resource_usage(&report) {
            if (stack > 0 || spills > 0) && !allow.contains(&function) {
                failures.push(format!(
                    "{stem}.cu: kernel `{function}` ({arch}) has a {stack}-byte stack frame and {spills} bytes of spill stores"
                ));
            }
        }
        // The image goes into the executable's .nv_fatbin section, where CUDA's tools
        // (cuobjdump, compute-sanitizer) look for device code; 8-byte aligned as fatbins must be.
        let upper = stem.to_uppercase();
        let len = fs::metadata(out.join(format!("{stem}.fatbin")))
            .expect("fatbin written by nvcc")
            .len();
        writeln!(
            generated,
            "    #[link_section = \".nv_fatbin\"]\n    #[used]\n    static {upper}_IMAGE: Aligned<[u8; {len}]> = Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.fatbin\")));\n    pub static {upper}: &[u8] = &{upper}_IMAGE.0;"
        )
        .unwrap();
    }
    if !failures.is_empty() {
        panic!(
            "ptxas gate: register spills or stack frames (reports in {}); fix the kernel or list it in kernels/ptxas-allow.txt with a reason:\n{}",
            out.display(),
            failures.join("\n")
        );
    }
    generated
}

/// `(function, arch, stack bytes, spill store bytes)` for every function in a `-Xptxas -v` report.
fn resource_usage(report: &str) -> Vec<(String, String, u64, u64)> {
    let mut rows = Vec::new();
    let mut arch = String::new();
    let mut function: Option<String> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let _name = parts.next();
            if let Some(tail) = parts.nth(1) {
                arch = tail.trim().trim_matches('\'').to_string();
            }
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            function = Some(rest.trim().to_string());
        } else if line.contains("bytes stack frame") {
            if let Some(f) = function.take() {
                let number_before = |label: &str| -> u64 {
                    line.split(',')
                        .find(|part| part.contains(label))
                        .and_then(|part| part.split_whitespace().next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                rows.push((
                    f,
                    arch.clone(),
                    number_before("bytes stack frame"),
                    number_before("bytes spill stores"),
                ));
            }
        }
    }
    rows
}

/// Kernel names allowed to spill, one per line: `name  reason`; `#` starts a comment.
fn read_allow_list(path: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.splitn(2, char::is_whitespace);
            let name = parts.next().unwrap_or("").to_string();
            let reason = parts.next().unwrap_or("").trim();
            assert!(
                !reason.is_empty(),
                "kernels/ptxas-allow.txt: `{name}` needs a reason after its name"
            );
            name
        })
        .collect()
}

fn build_emulator(kernels: &Path, sources: &[PathBuf], faults: &[PathBuf], out: &Path) {
    let emulator = kernels.join("emulator");
    let mut runtime: Vec<PathBuf> = fs::read_dir(&emulator)
        .unwrap_or_else(|e| panic!("reading {}: {e}", emulator.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    runtime.sort();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .define("REALM_EMULATE", None)
        .include(kernels.join("include"))
        .include(&emulator)
        .include(out)
        .flag("-x")
        .flag("c++")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);
    // The kernels of faults/ are the emulator's own tests: deliberately broken ones, and one
    // that shows whether blocks run at the same time.
    for f in runtime.iter().chain(sources).chain(faults) {
        build.file(f);
    }
    build.compile("realm_emulator");
}

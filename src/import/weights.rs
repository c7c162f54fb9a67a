//! The tensors of a transformers folder by name, without Python: `model.safetensors` (memory-
//! mapped) or PyTorch's `pytorch_model.bin` (a zip of a pickled state dict and raw storages, its
//! pickle read by `candle_core::pickle`). A large tensor can be read row by row
//! ([`HfWeights::rows`]), so `block_emb` (13.35M × 128 in the released REALM models) never has
//! to be in memory whole.

use crate::error::{Error, Result};
use candle_core::pickle::{PthTensors, TensorInfo};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The weights file of a transformers folder.
pub struct HfWeights {
    path: PathBuf,
    kind: Kind,
}

enum Kind {
    Safetensors(Mmap),
    Torch {
        infos: HashMap<String, TensorInfo>,
        zip: zip::ZipArchive<BufReader<File>>,
    },
}

/// Element types a weight may have (read as f32).
fn element_bytes(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => Some(4),
        DType::F16 | DType::BF16 => Some(2),
        DType::F64 => Some(8),
        _ => None,
    }
}

impl HfWeights {
    /// `dir/model.safetensors`, else `dir/pytorch_model.bin`.
    pub fn open(dir: &Path) -> Result<Self> {
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        if st.is_file() {
            let file = File::open(&st).map_err(|e| Error::file(&st, e))?;
            // SAFETY: the file is only read; a weights file changed by another process while
            // the import runs is outside what the import promises (as for every mapped input).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::file(&st, e))?;
            SafeTensors::deserialize(&map).map_err(|e| Error::file(&st, e))?;
            Ok(HfWeights {
                path: st,
                kind: Kind::Safetensors(map),
            })
        } else if bin.is_file() {
            let pth = PthTensors::new(&bin, None).map_err(|e| Error::file(&bin, e))?;
            let file = File::open(&bin).map_err(|e| Error::file(&bin, e))?;
            let zip =
                zip::ZipArchive::new(BufReader::new(file)).map_err(|e| Error::file(&bin, e))?;
            Ok(HfWeights {
                path: bin,
                kind: Kind::Torch {
                    infos: pth.tensor_infos().clone(),
                    zip,
                },
            })
        } else {
            Err(Error::file(
                dir,
                "holds neither model.safetensors nor pytorch_model.bin",
            ))
        }
    }

    /// The weights file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names = match &self.kind {
            Kind::Safetensors(map) => self
                .safetensors(map)?
                .names()
                .into_iter()
                .map(str::to_string)
                .collect(),
            Kind::Torch { infos, .. } => infos.keys().cloned().collect::<Vec<_>>(),
        };
        names.sort();
        Ok(names)
    }

    fn safetensors<'a>(&self, map: &'a Mmap) -> Result<SafeTensors<'a>> {
        SafeTensors::deserialize(map).map_err(|e| Error::file(&self.path, e))
    }

    /// Tensor `name` as f32 on the CPU.
    pub fn tensor(&mut self, name: &str) -> Result<Tensor> {
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| Error::file(&path, format!("{name}: {e}"));
        match &mut self.kind {
            Kind::Safetensors(map) => {
                use candle_core::safetensors::Load;
                let st = SafeTensors::deserialize(map).map_err(|e| err(&e))?;
                let view = st.tensor(name).map_err(|e| err(&e))?;
                let t = view.load(&Device::Cpu).map_err(|e| err(&e))?;
                Ok(t.to_dtype(DType::F32)?)
            }
            Kind::Torch { infos, zip } => {
                let (info, mut entry) = torch_entry(infos, zip, name).map_err(|e| err(&e))?;
                let len = info.layout.shape().elem_count() * info.dtype.size_in_bytes();
                let mut bytes = vec![0u8; len];
                entry.read_exact(&mut bytes).map_err(|e| err(&e))?;
                let t =
                    Tensor::from_raw_buffer(&bytes, info.dtype, info.layout.dims(), &Device::Cpu)
                        .map_err(|e| err(&e))?;
                Ok(t.to_dtype(DType::F32)?)
            }
        }
    }

    /// The dimensions of tensor `name`.
    pub fn dims(&self, name: &str) -> Result<Vec<usize>> {
        let err = |e: &dyn std::fmt::Display| Error::file(&self.path, format!("{name}: {e}"));
        match &self.kind {
            Kind::Safetensors(map) => {
                let st = self.safetensors(map)?;
                Ok(st.tensor(name).map_err(|e| err(&e))?.shape().to_vec())
            }
            Kind::Torch { infos, .. } => infos
                .get(name)
                .map(|i| i.layout.dims().to_vec())
                .ok_or_else(|| err(&"no such tensor")),
        }
    }

    /// Tensor `name` ([n, d], f32 or f16 in the file), to be read a few rows at a time
    /// ([`Rows::next_rows`]): memory for those rows, whatever n is.
    pub fn rows(&mut self, name: &str) -> Result<Rows<'_>> {
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| Error::file(&path, format!("{name}: {e}"));
        let dims = self.dims(name)?;
        let [_, d] = dims[..] else {
            return Err(err(&format!("shape {dims:?} is not [rows, columns]")));
        };
        let source = match &mut self.kind {
            Kind::Safetensors(map) => {
                let st = SafeTensors::deserialize(map).map_err(|e| err(&e))?;
                let view = st.tensor(name).map_err(|e| err(&e))?;
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    other => return Err(err(&format!("{other:?} rows (f32 or f16 are read)"))),
                };
                (RowSource::Mapped(view.data()), dtype)
            }
            Kind::Torch { infos, zip } => {
                let (info, entry) = torch_entry(infos, zip, name).map_err(|e| err(&e))?;
                if !matches!(info.dtype, DType::F32 | DType::F16) {
                    return Err(err(&format!("{:?} rows (f32 or f16 are read)", info.dtype)));
                }
                (RowSource::Zip(Box::new(entry)), info.dtype)
            }
        };
        Ok(Rows {
            path,
            source: source.0,
            dtype: source.1,
            row_bytes: d * element_bytes(source.1).unwrap_or(4),
        })
    }
}

/// The rows of a [n, d] tensor, read in order.
pub struct Rows<'a> {
    path: PathBuf,
    source: RowSource<'a>,
    dtype: DType,
    row_bytes: usize,
}

enum RowSource<'a> {
    /// What is left of the mapped tensor.
    Mapped(&'a [u8]),
    Zip(Box<zip::read::ZipFile<'a, BufReader<File>>>),
}

impl Rows<'_> {
    /// The next `count` rows, flattened, as f32 (an error if fewer are left).
    pub fn next_rows(&mut self, count: usize) -> Result<Vec<f32>> {
        let want = count * self.row_bytes;
        let short = || {
            Error::file(
                &self.path,
                format!("fewer rows left than the {count} asked for"),
            )
        };
        match &mut self.source {
            RowSource::Mapped(rest) => {
                if rest.len() < want {
                    return Err(short());
                }
                let (now, later) = rest.split_at(want);
                *rest = later;
                Ok(to_f32(now, self.dtype))
            }
            RowSource::Zip(entry) => {
                let mut buf = vec![0u8; want];
                entry.read_exact(&mut buf).map_err(|_| short())?;
                Ok(to_f32(&buf, self.dtype))
            }
        }
    }
}

/// The zip entry of a PyTorch tensor, positioned at its first element, after checking that the
/// tensor is contiguous, of a float type, and inside its storage entry (so that its size, read
/// from the pickle, is never trusted beyond the file).
fn torch_entry<'a>(
    infos: &HashMap<String, TensorInfo>,
    zip: &'a mut zip::ZipArchive<BufReader<File>>,
    name: &str,
) -> std::result::Result<(TensorInfo, zip::read::ZipFile<'a, BufReader<File>>), String> {
    let info = infos.get(name).ok_or("no such tensor")?.clone();
    let bytes =
        element_bytes(info.dtype).ok_or_else(|| format!("{:?} is not a float type", info.dtype))?;
    if !info.layout.is_contiguous() {
        return Err(format!("a strided tensor ({:?})", info.layout));
    }
    let start = info.layout.start_offset() as u64;
    let len = (info.layout.shape().elem_count() as u64)
        .checked_mul(bytes as u64)
        .ok_or("a size that overflows")?;
    let mut entry = zip
        .by_name(&info.path)
        .map_err(|e| format!("storage {}: {e}", info.path))?;
    if start.checked_add(len).is_none_or(|end| end > entry.size()) {
        return Err(format!(
            "{len} bytes from byte {start} of storage {}, which holds {}",
            info.path,
            entry.size()
        ));
    }
    std::io::copy(&mut (&mut entry).take(start), &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    Ok((info, entry))
}

/// Little-endian f32 or f16 bytes as f32.
fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

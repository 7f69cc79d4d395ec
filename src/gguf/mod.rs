//! GGUF reader over a memory map.
//!
//! Parses the header, every metadata value type (arrays included) and the
//! tensor infos, checks alignment and that every tensor lies inside the file,
//! and hands out tensor bytes as slices of the map. Every damage — truncation,
//! a bad magic, an unknown type, an offset past the end — is a one-line error
//! naming the file and the problem, never a panic.

mod tensor_type;
mod value;
pub mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use tensor_type::TensorType;
pub use value::Value;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Upper bound on dimensions a tensor may declare (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

/// A GGUF problem, always reported together with the file it concerns.
#[derive(Debug)]
pub struct GgufError {
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for GgufError {}

/// One tensor's description; `offset` is absolute within the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ttype: TensorType,
    pub offset: usize,
    pub size: usize,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    map: Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let fail = |problem: String| GgufError { path: path.to_path_buf(), problem };
        let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only; like every mmap user we rely on the
        // file not being truncated underneath us while the model is loaded.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map: {e}")))?;
        let parsed = parse(&map).map_err(fail)?;
        Ok(GgufFile { path: path.to_path_buf(), version: parsed.version, metadata: parsed.metadata, tensors: parsed.tensors, map })
    }

    pub fn error(&self, problem: impl Into<String>) -> GgufError {
        GgufError { path: self.path.clone(), problem: problem.into() }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.error(format!("metadata {key} is {}, expected a string", other.type_name()))),
            None => Err(self.error(format!("metadata {key} is missing"))),
        }
    }

    /// An integer of any width, as u64 (negative values are an error).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.get(key).ok_or_else(|| self.error(format!("metadata {key} is missing")))?;
        v.as_u64().ok_or_else(|| self.error(format!("metadata {key} is {}, expected an unsigned integer", v.type_name())))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.get(key).ok_or_else(|| self.error(format!("metadata {key} is missing")))?;
        v.as_f64().map(|x| x as f32).ok_or_else(|| self.error(format!("metadata {key} is {}, expected a number", v.type_name())))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor; bounds were checked at open.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset..info.offset + info.size]
    }

    pub fn file_size(&self) -> usize {
        self.map.len()
    }
}

pub(crate) struct Parsed {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian cursor over the mapped bytes.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated: {what} at byte {} needs {n} bytes, file has {}", self.pos, self.bytes.len()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in what is left of the file at `min_item_size`
    /// bytes per item: a corrupt count cannot make us allocate gigabytes.
    pub(crate) fn count(&mut self, what: &str, min_item_size: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_item_size.max(1) as u64) > left {
            return Err(format!("corrupt: {what} is {n}, more than the {left} bytes left could hold"));
        }
        Ok(n as usize)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.count(what, 1)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| format!("corrupt: {what} is not valid UTF-8"))
    }
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.take(4, "magic").map_err(|_| "not a GGUF file (too short for a header)".to_string())?;
    if magic != MAGIC {
        return Err(format!("not a GGUF file (magic {:02x?}, expected \"GGUF\")", magic));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version} (supported: 2, 3)"));
    }
    // Smallest possible tensor info: name length + dims count + one dim + type + offset.
    let tensor_count = c.count("tensor count", 8 + 4 + 8 + 4 + 8)?;
    // Smallest possible metadata pair: key length + value type + one byte.
    let kv_count = c.count("metadata count", 8 + 4 + 1)?;

    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = c.string("metadata key")?;
        let value = value::read_value(&mut c, &key, 0)?;
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => return Err(format!("corrupt: general.alignment {v:?} is not a power of two")),
        },
    };

    let mut raw = Vec::with_capacity(tensor_count);
    for _ in 0..tensor_count {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("corrupt: tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"));
        }
        let dims = (0..n_dims).map(|_| c.u64("tensor dimension")).collect::<Result<Vec<_>, _>>()?;
        let type_id = c.u32("tensor type")?;
        let ttype = TensorType::from_ggml(type_id).ok_or_else(|| format!("tensor {name} has unknown or unsupported type id {type_id}"))?;
        let rel = c.u64("tensor offset")?;
        if rel % alignment != 0 {
            return Err(format!("corrupt: tensor {name} offset {rel} is not aligned to {alignment}"));
        }
        raw.push((name, dims, ttype, rel));
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ttype, rel) in raw {
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let size = elements
            .filter(|&e| e % ttype.block_elems() as u64 == 0)
            .and_then(|e| (e / ttype.block_elems() as u64).checked_mul(ttype.block_bytes() as u64))
            .ok_or_else(|| format!("corrupt: tensor {name} has impossible dimensions {dims:?} for {ttype:?}"))?;
        let start = data_start.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => {
                tensors.push(TensorInfo { name, dims, ttype, offset: s as usize, size: size as usize })
            }
            _ => {
                return Err(format!(
                    "tensor {name} ({size} bytes at offset {}) points past the end of the file ({} bytes)",
                    data_start.saturating_add(rel),
                    bytes.len()
                ))
            }
        }
    }
    Ok(Parsed { version, metadata, tensors })
}

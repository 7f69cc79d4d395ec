//! GGUF writer: the inverse of the reader. It writes the models converted at
//! pull time, and the tests' synthetic and damaged files.

use std::io::{self, Write};

use super::{TensorType, Value};

/// GGUF's alignment where `general.alignment` is not set.
const ALIGNMENT: usize = 32;

pub struct TensorData {
    pub name: String,
    pub dims: Vec<u64>,
    pub ttype: TensorType,
    pub bytes: Vec<u8>,
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_payload(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            // An empty array's item type is irrelevant; u8 is as good as any.
            let item_type = items.first().map_or(0, Value::type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| write_payload(out, i));
        }
    }
}

/// Serializes a whole GGUF v3 file (default alignment) into bytes.
pub fn to_bytes(metadata: &[(String, Value)], tensors: &[TensorData]) -> Vec<u8> {
    let align = ALIGNMENT;
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut out, key);
        out.extend_from_slice(&value.type_id().to_le_bytes());
        write_payload(&mut out, value);
    }
    let mut offset = 0usize;
    for t in tensors {
        write_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&t.ttype.ggml_id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.bytes.len().div_ceil(align) * align;
    }
    out.resize(out.len().div_ceil(align) * align, 0);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
        out.resize(out.len().div_ceil(align) * align, 0);
    }
    out
}

pub fn write_file(path: &std::path::Path, metadata: &[(String, Value)], tensors: &[TensorData]) -> io::Result<()> {
    std::fs::File::create(path)?.write_all(&to_bytes(metadata, tensors))
}

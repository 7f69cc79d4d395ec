//! The GGUF reader: every value type round-trips, and damaged files give a
//! one-line error naming the file and the problem, never a panic.

mod common;

use caravan::gguf::write::{to_bytes, TensorData};
use caravan::gguf::TensorType;
use caravan::gguf::{GgufFile, Value};

fn all_values() -> Vec<(String, Value)> {
    vec![
        ("u8".into(), Value::U8(200)),
        ("i8".into(), Value::I8(-100)),
        ("u16".into(), Value::U16(60000)),
        ("i16".into(), Value::I16(-30000)),
        ("u32".into(), Value::U32(4_000_000_000)),
        ("i32".into(), Value::I32(-2_000_000_000)),
        ("u64".into(), Value::U64(u64::MAX)),
        ("i64".into(), Value::I64(i64::MIN)),
        ("f32".into(), Value::F32(1.5)),
        ("f64".into(), Value::F64(-2.25)),
        ("bool".into(), Value::Bool(true)),
        ("string".into(), Value::String("héllo".into())),
        ("array".into(), Value::Array(vec![Value::Array(vec![Value::I32(1), Value::I32(2)]), Value::Array(vec![])])),
    ]
}

fn small_file() -> Vec<u8> {
    let tensor = TensorData { name: "t".into(), dims: vec![32, 2], ttype: TensorType::Q8_0, bytes: vec![0; 68] };
    to_bytes(&all_values(), &[tensor])
}

fn open_bytes(bytes: &[u8]) -> Result<GgufFile, caravan::gguf::GgufError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, bytes).unwrap();
    GgufFile::open(&path)
}

#[test]
fn every_value_type_and_tensor_info_round_trips() {
    let f = open_bytes(&small_file()).unwrap();
    assert_eq!(f.version, 3);
    for (k, v) in all_values() {
        assert_eq!(f.get(&k), Some(&v), "{k}");
    }
    let t = f.tensor("t").unwrap();
    assert_eq!((t.dims.clone(), t.ttype, t.size), (vec![32, 2], TensorType::Q8_0, 68));
    assert_eq!(t.offset % 32, 0, "tensor data is aligned");
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = small_file();
    // The last 28 bytes are padding after the 68 bytes of tensor data.
    let data_end = bytes.len() - 28;
    assert!(open_bytes(&bytes[..data_end]).is_ok());
    for len in 0..data_end {
        let err = open_bytes(&bytes[..len]).err().unwrap_or_else(|| panic!("length {len} opened"));
        let msg = err.to_string();
        assert!(msg.contains("m.gguf: "), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}

#[test]
fn damaged_headers_name_their_problem() {
    let good = small_file();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(open_bytes(&bad_magic).err().unwrap().to_string().contains("not a GGUF file"));

    let mut bad_version = good.clone();
    bad_version[4] = 9;
    assert!(open_bytes(&bad_version).err().unwrap().to_string().contains("unsupported GGUF version 9"));

    let mut huge_count = good.clone();
    huge_count[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_bytes(&huge_count).err().unwrap().to_string().contains("corrupt: metadata count"));

    let type_at = find_type_offset(&good);
    let mut unknown_type = good.clone();
    unknown_type[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(open_bytes(&unknown_type).err().unwrap().to_string().contains("unknown or unsupported type id 99"));

    let mut past_end = good.clone();
    past_end[type_at + 4..type_at + 12].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(open_bytes(&past_end).err().unwrap().to_string().contains("points past the end of the file"));
}

/// Where the single tensor's type id is: right after its name and dims.
fn find_type_offset(bytes: &[u8]) -> usize {
    let name = b"\x01\x00\x00\x00\x00\x00\x00\x00t\x02\x00\x00\x00";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    at + name.len() + 16
}

#[test]
fn a_truncated_real_model_is_refused() {
    let real = std::fs::read(common::model_path()).unwrap();
    let err = open_bytes(&real[..real.len() / 2]).err().unwrap().to_string();
    assert!(err.contains("points past the end of the file"), "{err}");
}

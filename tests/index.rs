//! The index folder: round trip, validation at load, atomic writes.

use candle_core::{DType, Device, Tensor};
use realm::data::Block;
use realm::index::StoredIndex;

fn blocks(n: usize) -> Vec<Block> {
    (0..n)
        .map(|i| Block {
            doc_id: format!("doc{i}"),
            title: format!("Title {i}"),
            tokens: vec![i as u32, 7, 9],
            sentences: vec![0..1, 1..3],
        })
        .collect()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("realm-index-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn round_trip_is_exact() {
    let emb = Tensor::arange(0f32, 12.0, &Device::Cpu)
        .unwrap()
        .reshape((4, 3))
        .unwrap();
    let index = StoredIndex::new("abc", "runs/x/checkpoint", 500, blocks(4), emb.clone()).unwrap();
    let dir = temp_dir("rt");
    index.save(&dir).unwrap();
    let loaded = StoredIndex::load(&dir, Some("abc")).unwrap();
    assert_eq!(loaded.manifest, index.manifest);
    assert_eq!(loaded.blocks, index.blocks);
    assert_eq!(loaded.embeddings.dtype(), DType::F16);
    let a: Vec<f32> = loaded
        .embeddings
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, (0..12).map(|v| v as f32).collect::<Vec<_>>());
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mismatches_and_damage_are_clear_errors() {
    let emb = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
    let dir = temp_dir("bad");
    StoredIndex::new("abc", "ckpt", 1, blocks(2), emb.clone())
        .unwrap()
        .save(&dir)
        .unwrap();

    let err = StoredIndex::load(&dir, Some("other"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("built by model abc") && err.contains("realm index"),
        "{err}"
    );

    assert!(StoredIndex::new("abc", "ckpt", 1, blocks(3), emb.clone())
        .unwrap_err()
        .to_string()
        .contains("2 rows for 3 blocks"));
    let nan = Tensor::new(&[[1f32, f32::NAN, 0.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    assert!(StoredIndex::new("abc", "ckpt", 1, blocks(2), nan)
        .unwrap_err()
        .to_string()
        .contains("row 0 has a non-finite value"));

    // A truncated block file.
    let text = std::fs::read_to_string(dir.join("blocks.jsonl")).unwrap();
    std::fs::write(dir.join("blocks.jsonl"), text.lines().next().unwrap()).unwrap();
    let err = StoredIndex::load(&dir, None).unwrap_err().to_string();
    assert!(err.contains("1 blocks; the manifest says 2"), "{err}");

    let err = StoredIndex::load(dir.join("nope"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an index folder"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

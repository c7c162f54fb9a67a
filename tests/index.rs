//! The index folder: round trip, validation at load, atomic writes of the whole folder, the
//! manifest's checksums, what `realm index --out` may replace, model paths relative to the index.

mod common;

use common::temp_path;

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

#[test]
fn round_trip_is_exact() {
    let emb = Tensor::arange(0f32, 12.0, &Device::Cpu)
        .unwrap()
        .reshape((4, 3))
        .unwrap();
    let index = StoredIndex::new("abc", "runs/x/checkpoint", 500, blocks(4), emb.clone()).unwrap();
    let dir = temp_path("rt");
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
    let dir = temp_path("bad");
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
    assert!(
        err.contains("blocks.jsonl") && err.contains("does not belong"),
        "{err}"
    );

    let err = StoredIndex::load(dir.join("nope"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an index folder"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn saved(dir: &std::path::Path, fingerprint: &str, n: usize, value: f32) -> StoredIndex {
    let emb = Tensor::full(value, (n, 3), &Device::Cpu).unwrap();
    let index = StoredIndex::new(fingerprint, "ckpt", 1, blocks(n), emb).unwrap();
    index.save(dir).unwrap();
    index
}

#[test]
fn a_mixed_or_altered_folder_is_refused_naming_the_file() {
    let root = temp_path("mixed");
    let (a, b) = (root.join("a"), root.join("b"));
    saved(&a, "abc", 2, 1.0);
    saved(&b, "abc", 2, 0.5);
    // The embeddings of another index of the same shape, under this manifest.
    std::fs::copy(
        b.join("embeddings.safetensors"),
        a.join("embeddings.safetensors"),
    )
    .unwrap();
    let err = StoredIndex::load(&a, None).unwrap_err().to_string();
    assert!(
        err.contains("embeddings.safetensors") && err.contains("checksum"),
        "{err}"
    );
    // One byte of the block records altered (a title), the size unchanged.
    saved(&a, "abc", 2, 1.0);
    let text = std::fs::read_to_string(a.join("blocks.jsonl")).unwrap();
    std::fs::write(a.join("blocks.jsonl"), text.replace("Title 1", "Title 9")).unwrap();
    let err = StoredIndex::load(&a, None).unwrap_err().to_string();
    assert!(
        err.contains("blocks.jsonl") && err.contains("altered"),
        "{err}"
    );
    // A block file of another size.
    std::fs::write(a.join("blocks.jsonl"), format!("{text}\n")).unwrap();
    let err = StoredIndex::load(&a, None).unwrap_err().to_string();
    assert!(
        err.contains("blocks.jsonl") && err.contains("bytes"),
        "{err}"
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn format_1_folders_without_checksums_still_load() {
    let dir = temp_path("v1");
    let index = saved(&dir, "abc", 2, 1.0);
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["format_version"] = 1.into();
    manifest.as_object_mut().unwrap().remove("files");
    std::fs::write(&path, manifest.to_string()).unwrap();
    let loaded = StoredIndex::load(&dir, None).unwrap();
    assert_eq!(loaded.blocks, index.blocks);
    // Still validated: a truncated block file is an error.
    let text = std::fs::read_to_string(dir.join("blocks.jsonl")).unwrap();
    std::fs::write(dir.join("blocks.jsonl"), text.lines().next().unwrap()).unwrap();
    assert!(StoredIndex::load(&dir, None).is_err());
    // A format this build does not know.
    manifest["format_version"] = 9.into();
    std::fs::write(&path, manifest.to_string()).unwrap();
    let err = StoredIndex::load(&dir, None).unwrap_err().to_string();
    assert!(err.contains("format version 9"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rebuilding_replaces_the_folder_whole_and_only_an_index_folder() {
    let root = temp_path("replace");
    let dir = root.join("index");
    saved(&dir, "abc", 3, 1.0);
    std::fs::write(dir.join("stray.txt"), "left by hand").unwrap();
    saved(&dir, "def", 2, 0.5);
    // The new folder is exactly the new index: nothing of the old one is left in it or beside it.
    let loaded = StoredIndex::load(&dir, None).unwrap();
    assert_eq!(loaded.manifest.model_fingerprint, "def");
    assert!(!dir.join("stray.txt").exists());
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["index"]);
    // What `realm index --out` may replace: nothing, an empty folder, an index; not a folder or
    // file of the user's.
    StoredIndex::check_replaceable(&dir, "--out").unwrap();
    StoredIndex::check_replaceable(&root.join("absent"), "--out").unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    StoredIndex::check_replaceable(&root.join("empty"), "--out").unwrap();
    std::fs::create_dir_all(root.join("mine")).unwrap();
    std::fs::write(root.join("mine/notes.md"), "mine").unwrap();
    let err = StoredIndex::check_replaceable(&root.join("mine"), "--out")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--out") && err.contains("not an index folder"),
        "{err}"
    );
    std::fs::write(root.join("file"), "x").unwrap();
    assert!(StoredIndex::check_replaceable(&root.join("file"), "--out").is_err());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_model_folder_is_recorded_relative_to_the_index() {
    let root = temp_path("relative");
    let model = root.join("models").join("m");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let emb = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
    let index = StoredIndex::new("abc", model.to_str().unwrap(), 1, blocks(2), emb).unwrap();
    let dir = root.join("runs").join("idx");
    index.save(&dir).unwrap();
    let loaded = StoredIndex::load(&dir, None).unwrap();
    assert_eq!(loaded.manifest.model_path, "../../models/m");
    assert_eq!(
        loaded.manifest.model_dir(&dir).canonicalize().unwrap(),
        model.canonicalize().unwrap()
    );
    std::fs::remove_dir_all(root).unwrap();
}

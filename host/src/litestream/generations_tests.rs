use super::*;

fn meta(key: &str, modified: u64) -> ObjectMeta {
    ObjectMeta { key: key.into(), size: 1, etag: String::new(), modified_ms: Some(modified), metadata: vec![] }
}

const G1: &str = "generations/00000000000000a1";
const G2: &str = "generations/00000000000000b2";

fn objects() -> Vec<ObjectMeta> {
    vec![
        meta(&format!("{G1}/snapshots/00000000.snapshot.lz4"), 10),
        meta(&format!("{G1}/wal/00000000_00000000.wal.lz4"), 11),
        meta(&format!("{G1}/wal/00000000_00001000.wal.lz4"), 12),
        meta(&format!("{G1}/wal/00000001_00000000.wal.lz4"), 13),
        meta(&format!("{G2}/snapshots/00000003.snapshot.lz4"), 20),
        meta(&format!("{G2}/wal/00000003_00000000.wal.lz4"), 21),
        meta(&format!("{G2}/wal/00000004_00000000.wal.lz4"), 22),
        meta("generations/nothex/snapshots/00000000.snapshot.lz4", 30),
        meta("ltx/0/0000000000000001-0000000000000001.ltx", 30),
        meta(&format!("{G1}/wal/0000000_00000000.wal.lz4"), 30),
    ]
}

#[test]
fn the_generation_updated_last_is_restored_whole() {
    let p = plan(&generations(&objects()), Target::Latest).unwrap();
    assert_eq!(p.generation, "00000000000000b2");
    assert_eq!(p.snapshot_index, 3);
    assert_eq!(p.wal.iter().map(|(i, s)| (*i, s.len())).collect::<Vec<_>>(), [(3, 1), (4, 1)]);
    assert_eq!(p.position(), "generation 00000000000000b2 index 00000004");
}

#[test]
fn a_timestamp_picks_the_generation_and_segments_before_it() {
    let p = plan(&generations(&objects()), Target::Timestamp(12)).unwrap();
    assert_eq!(p.generation, "00000000000000a1");
    assert_eq!(p.keys().len(), 3, "{:?}", p.keys());
    let err = plan(&generations(&objects()), Target::Timestamp(9)).unwrap_err();
    assert!(err.to_string().contains("no snapshot"), "{err}");
}

#[test]
fn a_txid_target_is_refused_with_what_to_use() {
    let err = plan(&generations(&objects()), Target::Txid(3)).unwrap_err();
    assert!(err.to_string().contains("-timestamp"), "{err}");
}

#[test]
fn a_missing_wal_index_is_refused() {
    let mut o = objects();
    o.retain(|m| !m.key.ends_with("00000003_00000000.wal.lz4"));
    let err = plan(&generations(&o), Target::Latest).unwrap_err();
    assert!(err.to_string().contains("00000003 is missing"), "{err}");
    o.push(meta(&format!("{G2}/wal/00000003_00000000.wal.lz4"), 21));
    o.push(meta(&format!("{G2}/wal/00000006_00000000.wal.lz4"), 23));
    let err = plan(&generations(&o), Target::Latest).unwrap_err();
    assert!(err.to_string().contains("00000005 is missing"), "{err}");
}

//! Mutation fuzzing of the parsers fed by files an attacker or a fault can
//! shape: the WAL reader (a `-wal` file), the segment reader (objects from
//! a store, possibly a hostile plugin's) and the config parser. Each target
//! starts from real inputs (a WAL SQLite wrote, segments our writer wrote,
//! Litestream-style configs), mutates them (bit flips, byte runs, cuts,
//! splices, integers at the edges), and requires an answer for every input:
//! no panic, and no input taking longer than `SLOW_INPUT`. Segments are
//! also given a valid content hash after mutation, so the mutations reach
//! the index and block parsing behind the checksum, as a store that forges
//! checksums would.
//!
//! Quick by default (CI); `SLUICE_FUZZ_ITERS=N` runs N inputs per target,
//! `SLUICE_FUZZ_SEED` picks the sequence (a failure names both).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};

/// Inputs per target in the quick (CI) mode: a few seconds each in a
/// debug build.
const QUICK_ITERS: u64 = 3_000;
/// An input that takes longer than this is a hang.
const SLOW_INPUT: Duration = Duration::from_secs(2);

fn iterations() -> u64 {
    std::env::var("SLUICE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(QUICK_ITERS)
}

fn seed() -> u64 {
    std::env::var("SLUICE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5_1u64 << 32 | 0xce)
}

/// One mutation of `data`, in place.
fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    if data.is_empty() {
        data.push(rng.random());
        return;
    }
    let at = rng.random_range(0..data.len());
    match rng.random_range(0..8) {
        0 => data[at] ^= 1 << rng.random_range(0..8),
        1 => data[at] = rng.random(),
        2 => {
            // An integer at an edge, big-endian as the formats are.
            let edges: [u32; 6] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 65536];
            let bytes = edges[rng.random_range(0..edges.len())].to_be_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 => data.truncate(at),
        4 => {
            let n = rng.random_range(1..64).min(data.len() - at);
            data.drain(at..at + n);
        }
        5 => {
            let run: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            data.splice(at..at, run);
        }
        6 => {
            // Splice in a piece of another input.
            let other = &corpus[rng.random_range(0..corpus.len())];
            if !other.is_empty() {
                let from = rng.random_range(0..other.len());
                let n = rng.random_range(1..256).min(other.len() - from);
                let end = (at + n).min(data.len());
                data.splice(at..end, other[from..from + n].iter().copied());
            }
        }
        _ => {
            let len = rng.random_range(1..16).min(data.len() - at);
            let fill = rng.random();
            data[at..at + len].fill(fill);
        }
    }
}

/// Feed `target` `iterations()` mutants of the corpus. The target says
/// how far each got (a stage from 0, rejected at once, up); the tally is
/// reported, so a corpus or mutator that never gets past the first check
/// shows.
fn fuzz(name: &str, corpus: &[Vec<u8>], mut target: impl FnMut(&[u8]) -> usize) -> Vec<u64> {
    let (iters, seed) = (iterations(), seed());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reached = Vec::new();
    for i in 0..iters {
        let mut input = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..5) {
            mutate(&mut rng, &mut input, corpus);
        }
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        let Ok(stage) = outcome else {
            panic!("{name}: input {i} panicked (SLUICE_FUZZ_SEED={seed}, SLUICE_FUZZ_ITERS={iters})")
        };
        if reached.len() <= stage {
            reached.resize(stage + 1, 0);
        }
        reached[stage] += 1;
        assert!(
            started.elapsed() < SLOW_INPUT,
            "{name}: input {i} took {:?} (SLUICE_FUZZ_SEED={seed})",
            started.elapsed()
        );
    }
    eprintln!("fuzz {name}: {iters} inputs, seed {seed}, no panic or hang; inputs by stage reached: {reached:?}");
    reached
}

mod wal {
    use crate::wal::WalHeader;
    use std::io::Write;

    /// WALs as SQLite writes them: several page sizes, commits of one and
    /// several frames, a WAL restarted over a longer one.
    fn corpus() -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        for (i, page_size) in [512u32, 4096].into_iter().enumerate() {
            let path = dir.path().join(format!("db{i}"));
            let c = rusqlite::Connection::open(&path).unwrap();
            c.pragma_update(None, "page_size", page_size).unwrap();
            c.pragma_update(None, "journal_mode", "wal").unwrap();
            c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(3000));").unwrap();
            for _ in 0..4 {
                c.execute("INSERT INTO t VALUES (randomblob(200))", []).unwrap();
            }
            out.push(std::fs::read(crate::db::wal_path(&path)).unwrap());
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
            c.execute("INSERT INTO t VALUES (1)", []).unwrap();
            out.push(std::fs::read(crate::db::wal_path(&path)).unwrap());
        }
        out
    }

    /// What capture does with a WAL: the header, a scan from the start and
    /// from a mark, and every page the scan names.
    fn read(dir: &std::path::Path, bytes: &[u8]) -> usize {
        let path = dir.join("mutated_wal");
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let Ok(Some((h, file))) = WalHeader::from_file(std::fs::File::open(&path).unwrap()) else { return 0 };
        let Ok(scan) = h.scan(&file, h.start(), None) else { return 1 };
        let mut buf = vec![0u8; h.page_size as usize];
        for &frame in scan.pages.values() {
            let _ = h.read_page(&file, frame, &mut buf);
        }
        if let Some(end) = scan.end {
            let _ = h.continues(&file, end);
            let _ = h.scan(&file, end, Some(end.frames.saturating_add(3)));
        }
        let _ = h.still_heads(&file);
        if scan.transactions > 0 { 3 } else { 2 }
    }

    #[test]
    fn the_wal_reader_answers_every_mutated_wal() {
        let dir = tempfile::tempdir().unwrap();
        let reached = super::fuzz("wal", &corpus(), |bytes| read(dir.path(), bytes));
        assert!(reached.get(3).is_some_and(|n| *n > 0), "no mutant got a transaction through: {reached:?}");
    }
}

mod segment {
    use crate::checksum::{PageHashes, page_hash};
    use crate::segment::apply::{SparseSink, apply};
    use crate::segment::format::{HEADER_SIZE, TRAILER_SIZE};
    use crate::segment::{Header, SegmentReader, SegmentWriter, reader::verify_bytes};

    /// Segments as capture and compaction write them: a snapshot, a small
    /// level-0 one, one with pages out of order in two blocks.
    fn corpus() -> Vec<Vec<u8>> {
        let page = |pgno: u32, size: usize| -> Vec<u8> { (0..size).map(|i| (i as u32 ^ pgno) as u8).collect() };
        let build = |min_txid: u64, pages: &[u32], size: u32, split: Option<u32>| {
            let header = Header { page_size: size, min_txid, max_txid: min_txid + 1, ..Header::default() };
            let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
            let mut hashes = PageHashes::new(size);
            for &p in pages {
                if Some(p) == split {
                    w.end_block().unwrap();
                }
                let data = page(p, size as usize);
                hashes.set(p, page_hash(p, &data));
                w.add_page(p, &data).unwrap();
            }
            let max = pages.iter().copied().max().unwrap_or(1);
            w.finish(max, hashes.checksum()).unwrap().0.into_inner()
        };
        vec![
            build(1, &(1..=40).collect::<Vec<_>>(), 512, None),
            build(7, &[2, 9, 30], 4096, None),
            build(3, &[1, 2, 3, 10, 11], 1024, Some(10)),
        ]
    }

    /// Give a mutant the content hash and end marker its (mutated) bytes
    /// call for, so it gets past the checksum as a forged object would.
    fn forge(bytes: &mut [u8]) {
        if bytes.len() < HEADER_SIZE + TRAILER_SIZE + 4 {
            return;
        }
        let len = bytes.len();
        let Ok(header) = Header::decode(&bytes[..HEADER_SIZE]) else { return };
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes[HEADER_SIZE..len - TRAILER_SIZE]);
        bytes[len - TRAILER_SIZE..len - 8].copy_from_slice(&hash.to_be_bytes());
        bytes[len - 8..].copy_from_slice(&header.end_magic());
    }

    /// What restore, compaction and an upload's check do with a segment.
    fn read(bytes: &[u8], scratch: &std::path::Path) -> usize {
        let _ = verify_bytes(bytes);
        let Ok(mut reader) = SegmentReader::from_bytes(bytes.to_vec()) else { return 0 };
        let _ = reader.blocks();
        if reader.for_each_page(|_, _| Ok(())).is_err() {
            return 1;
        }
        let page_size = reader.header().page_size;
        // Applied the way a restore applies it, verifying checksums.
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(scratch).unwrap();
        let mut sink = SparseSink::new(file, page_size);
        let mut hashes = PageHashes::new(page_size);
        match apply(&mut reader, &mut sink, Some(&mut hashes)) {
            Ok(()) => 3,
            Err(_) => 2,
        }
    }

    #[test]
    fn the_segment_reader_answers_every_mutated_segment() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("apply");
        let corpus = corpus();
        super::fuzz("segment", &corpus, |bytes| read(bytes, &scratch));
        let reached = super::fuzz("forged segment", &corpus, |bytes| {
            let mut forged = bytes.to_vec();
            forge(&mut forged);
            read(&forged, &scratch)
        });
        assert!(reached.len() > 2 && reached[1..].iter().sum::<u64>() > 0, "nothing got past the index: {reached:?}");
    }
}

mod config {
    /// Configs a Litestream user writes, in both replica forms, with
    /// directory mode, sandbox settings and durations.
    const CORPUS: [&str; 3] = [
        "dbs:\n  - path: /var/lib/app.db\n    replicas:\n      - url: s3://bucket.nyc3.digitaloceanspaces.com/db\n        sync-interval: 1s\n        retention: 24h\n",
        "access-key-id: AKIA\nsecret-access-key: x\nlogging:\n  level: debug\ndbs:\n  - path: /data/a.db\n    monitor-interval: 50ms\n    min-checkpoint-page-count: 200\n    replica:\n      type: s3\n      bucket: b\n      path: a\n      endpoint: http://127.0.0.1:9000\n      force-path-style: true\n",
        "dbs:\n  - dir: /srv/tenants\n    pattern: \"*.db\"\n    recursive: true\n    replicas:\n      - url: file:///backups\n        plugin: /opt/x.wasm\n        sandbox: { memory-mib: 64, cpu-ms: 500, allow-hosts: [\"*.example.com\"] }\n        lease-timeout: 30s\n",
    ];

    #[test]
    fn the_config_parser_answers_every_mutated_config() {
        let corpus: Vec<Vec<u8>> = CORPUS.iter().map(|c| c.as_bytes().to_vec()).collect();
        let path = std::path::Path::new("fuzz.yml");
        super::fuzz("config", &corpus, |bytes| {
            let text = String::from_utf8_lossy(bytes);
            match crate::config::file::parse(&text, path, false) {
                Ok(parsed) => 1 + crate::config::resolve::resolve(&parsed.config).is_ok() as usize,
                Err(_) => 0,
            }
        });
    }
}

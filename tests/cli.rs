//! The command line as Litestream users' scripts call it: flags and
//! commands of Litestream 0.5 that sluice takes the same way (issue 16's
//! "Commands and flags"), driven through the real binary.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ltx_rows(args: &[&str]) -> Vec<serde_json::Value> {
    let out = run_ok(sluice().args(args));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn config(dir: &Path, db: &Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("sluice.yml");
    std::fs::write(&path, format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display())).unwrap();
    path
}

#[test]
fn litestream_flags_and_commands_scripts_use() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    conn.execute("INSERT INTO t(a) VALUES ('one')", []).unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let sqlite_db = format!("sqlite://{}", db.display());
    // `sqlite://` marks a database path on the command line.
    run_ok(sluice().args(["replicate", "-once", &sqlite_db, &url]));
    conn.execute("INSERT INTO t(a) VALUES ('two')", []).unwrap();
    run_ok(sluice().args(["replicate", "-once", &sqlite_db, &url]));

    // `ltx` lists level 0 unless told `-level all`; `wal` is its old name;
    // JSON rows carry Litestream's field names.
    let all = ltx_rows(&["ltx", "-level", "all", "-json", &url]);
    assert!(all.iter().any(|r| r["level"] == 9), "no snapshot listed: {all:?}");
    assert!(all.iter().all(|r| r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z') && !t.contains('.'))));
    let level0 = ltx_rows(&["ltx", "-json", &url]);
    assert!(level0.iter().all(|r| r["level"] == 0), "the default lists other levels: {level0:?}");
    assert_eq!(level0, ltx_rows(&["wal", "-json", &url]));
    let bad = sluice().args(["ltx", "-level", "10", &url]).output().unwrap();
    assert!(!bad.status.success() && text(&bad).contains("0-9"), "{}", text(&bad));

    // restore -parallelism, and a configured database named `sqlite://`.
    let cfg = config(dir.path(), &db, &url);
    let out = dir.path().join("out.db");
    run_ok(sluice().args(["restore", "-parallelism", "2", "-config"]).arg(&cfg).arg("-o").arg(&out).arg(&sqlite_db));
    let rows: i64 =
        rusqlite::Connection::open(&out).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 2);
    let zero =
        sluice().args(["restore", "-parallelism", "0", "-o"]).arg(dir.path().join("x.db")).arg(&url).output().unwrap();
    assert!(!zero.status.success() && text(&zero).contains("from 1 to"), "{}", text(&zero));

    // reset -dry-run names the local state and removes none of it.
    let dry = run_ok(sluice().args(["reset", "-dry-run", "-config"]).arg(&cfg).arg(&db));
    let listed: Vec<String> =
        text(&dry).lines().filter_map(|l| l.strip_prefix("would remove ").map(String::from)).collect();
    assert!(!listed.is_empty(), "nothing listed:\n{}", text(&dry));
    assert!(listed.iter().all(|p| Path::new(p).exists()), "a dry run removed {listed:?}");

    // status and databases need a config, and say so.
    for command in ["status", "databases"] {
        let out = sluice().arg(command).current_dir(dir.path()).output().unwrap();
        assert!(!out.status.success(), "{command} without a config exited 0:\n{}", text(&out));
        assert!(text(&out).contains("config file not found"), "{command}: {}", text(&out));
    }
    let verbose = run_ok(sluice().args(["version", "-verbose"]));
    assert!(text(&verbose).contains("Bundled plugins") && text(&verbose).contains("sluice:storage@"));
}

/// Logs as Litestream writes them: `replicate` logs to stdout unless
/// `logging.stderr: true`; `LOG_LEVEL` is honoured and `-log-level` wins;
/// an unknown level warns and logs at info (it used to silence
/// everything); `logging.type: json` lines carry `time`, `level`, `msg`.
#[test]
fn logs_go_where_litestream_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let _conn = create_db(&db, 4096);
    let url = format!("file://{}", dir.path().join("replica").display());
    let write = |logging: &str| {
        let path = dir.path().join("sluice.yml");
        let text = format!("{logging}dbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display());
        std::fs::write(&path, text).unwrap();
        path
    };
    let once = |config: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = sluice();
        cmd.env_remove("SLUICE_LOG_STDERR").env_remove("SLUICE_LOG").envs(env.iter().copied());
        let out = run_ok(cmd.args(["replicate", "-once"]).args(extra).arg("-config").arg(config));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (out, err) = once(&write(""), &[], &[]);
    assert!(out.contains("INFO") && !err.contains("INFO"), "stdout:\n{out}\nstderr:\n{err}");
    let (out, err) = once(&write("logging:\n  stderr: true\n"), &[], &[]);
    assert!(err.contains("INFO") && !out.contains("INFO"), "stdout:\n{out}\nstderr:\n{err}");
    let plain = write("");
    let (out, _) = once(&plain, &[], &[("LOG_LEVEL", "debug")]);
    assert!(out.contains("DEBUG"), "LOG_LEVEL=debug:\n{out}");
    let (out, _) = once(&plain, &["-log-level", "warn"], &[("LOG_LEVEL", "debug")]);
    assert!(!out.contains("DEBUG") && !out.contains("INFO"), "-log-level warn:\n{out}");
    let (out, _) = once(&plain, &["-log-level", "verbose"], &[]);
    assert!(out.contains("unknown log level `verbose`") && out.contains("INFO"), "{out}");
    let (out, _) = once(&write("logging:\n  type: json\n"), &[], &[]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(first["time"].is_string() && first["level"] == "INFO" && first["msg"].is_string(), "{first}");
}

/// README's "Coming from Litestream" table stays true: every flag is in
/// its command's help, every config key parses without an "unknown key"
/// warning, each "noted" key is noted and each "yes" key is not, and the
/// commands marked "no" do not exist.
#[test]
fn the_compatibility_table_is_true() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find("| Litestream 0.5 | where | sluice |").expect("the table in README.md");
    let rows: Vec<Vec<String>> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect();
    assert!(rows.len() > 50, "{} rows", rows.len());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let _conn = create_db(&db, 4096);
    let (mut flags, mut keys) = (0, 0);
    for row in &rows {
        let (item, place, verdict) = (&row[0], row[1].as_str(), row[2].as_str());
        let code: Vec<&str> = item.split('`').skip(1).step_by(2).collect();
        match place {
            "command" if verdict.starts_with("no:") => {
                for cmd in code {
                    let out = sluice().args([cmd, "-h"]).output().unwrap();
                    assert!(!out.status.success(), "`{cmd}` exists; the table says it does not");
                }
            }
            "command" => {
                let (cmd, flag) = code[0].split_once(" -").unwrap();
                let help = text(&run_ok(sluice().args([cmd, "-h"])));
                assert!(
                    help.contains(&format!("--{flag} "))
                        || help.contains(&format!("-{flag},"))
                        || help.contains(&format!("--{flag}\n")),
                    "`{cmd} -{flag}` is not in its help:\n{help}"
                );
                flags += 1;
            }
            _ if verdict.starts_with("no:") || item.contains("...") => {}
            _ => {
                check_key(dir.path(), &db, code[0], place, verdict == "noted");
                keys += 1;
            }
        }
    }
    assert!(flags > 20 && keys > 35, "{flags} flags, {keys} keys checked");
}

/// `fragment` (`key: value`) placed at `place` of a config parses, without
/// an unknown-key warning, noted or not as the table says.
fn check_key(dir: &Path, db: &Path, fragment: &str, place: &str, noted: bool) {
    let url = format!("file://{}", dir.join("replica").display());
    let text = match place {
        "global" => format!("{fragment}\ndbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display()),
        "database" => format!("dbs:\n  - path: {}\n    {fragment}\n    replica:\n      url: {url}\n", db.display()),
        "replica" => format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n      {fragment}\n", db.display()),
        other => panic!("unknown place `{other}`"),
    };
    let config = dir.join("compat.yml");
    std::fs::write(&config, &text).unwrap();
    let out = sluice().args(["databases", "-config"]).arg(&config).output().unwrap();
    let all = text_of(&out);
    assert!(out.status.success(), "`{fragment}` ({place}) does not parse:\n{all}");
    assert!(!all.contains("unknown key"), "`{fragment}` ({place}) is called unknown:\n{all}");
    let key = fragment.split(':').next().unwrap();
    let said =
        all.contains(&format!("`{key}`:")) || all.contains(&format!("`{key}.")) || all.contains(&format!(".{key}`"));
    assert_eq!(said, noted, "`{fragment}` ({place}): noted {said}, the table says {noted}:\n{all}");
}

fn text_of(out: &Output) -> String {
    text(out)
}

/// Directory mode: every database under `dir` is replicated to the replica
/// path plus its path below `dir` (Litestream's layout) and restores from
/// there; a file that is not SQLite is skipped with a warning.
#[test]
fn a_directory_of_databases_each_gets_its_own_replica_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("tenants")).unwrap();
    let a = create_db(&data.join("a.db"), 4096);
    let b = create_db(&data.join("tenants/b.db"), 4096);
    let mut rng = seeded(3);
    workload(&a, &mut rng, 30);
    workload(&b, &mut rng, 60);
    std::fs::write(data.join("notes.db"), "plain text").unwrap();
    let replica = dir.path().join("replica");
    let config = dir.path().join("sluice.yml");
    let yaml = format!(
        "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    recursive: true\n    replica:\n      url: file://{}\n",
        data.display(),
        replica.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let out = run_ok(sluice().args(["replicate", "-once", "-config"]).arg(&config));
    assert!(text(&out).contains("notes.db matches `pattern` but is not a SQLite database"), "{}", text(&out));
    for (rel, conn) in [("a.db", &a), ("tenants/b.db", &b)] {
        let restored = dir.path().join(format!("restored-{}", rel.replace('/', "-")));
        run_ok(sluice().args(["restore", "-o"]).arg(&restored).arg(format!("file://{}/{rel}", replica.display())));
        assert_same_image(&image(conn), &file_image(&restored, 4096), rel);
    }
}

/// Every command's `-h` ends with examples.
#[test]
fn every_command_help_has_examples() {
    let socket = ["info", "list", "sync", "start", "stop", "register", "unregister"];
    for cmd in
        ["replicate", "restore", "databases", "ltx", "status", "reset", "plugin", "version"].into_iter().chain(socket)
    {
        let help = text(&run_ok(sluice().args([cmd, "-h"])));
        assert!(help.contains("Examples:\n  sluice "), "`{cmd} -h` has no examples:\n{help}");
    }
}

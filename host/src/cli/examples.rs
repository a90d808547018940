//! The examples at the end of each command's `-h`: the command lines a
//! Litestream user's scripts and guides use, in sluice's words.

pub const REPLICATE: &str = "Examples:
  sluice replicate -config /etc/litestream.yml
  sluice replicate /var/lib/app/app.db s3://bucket/app
  sluice replicate -exec \"myapp serve\" -config app.yml   # run the app as a child
  sluice replicate -once -config app.yml                 # one sync, then exit (cron)
  sluice replicate -once -force-snapshot -config app.yml";

pub const RESTORE: &str = "Examples:
  sluice restore -o app.db s3://bucket/app
  sluice restore /var/lib/app/app.db                     # a configured database, to its own path
  sluice restore -if-db-not-exists -if-replica-exists /var/lib/app/app.db
  sluice restore -timestamp 2026-11-25T17:45:29Z -o app.db s3://bucket/app
  sluice restore -txid 000000000000002a -o app.db file:///backups/app
  sluice restore -f -o follower.db s3://bucket/app       # keep applying new changes
Litestream's own backups (0.5 LTX files, 0.3 generations) restore the same way.";

pub const DATABASES: &str = "Examples:
  sluice databases -config /etc/litestream.yml
  sluice databases -json";

pub const LTX: &str = "Examples:
  sluice ltx /var/lib/app/app.db                          # level 0, as Litestream
  sluice ltx -level all -json s3://bucket/app";

pub const STATUS: &str = "Examples:
  sluice status
  sluice status -json /var/lib/app/app.db";

pub const RESET: &str = "Examples:
  sluice reset -dry-run /var/lib/app/app.db
  sluice reset /var/lib/app/app.db                         # the next sync takes a snapshot";

pub const PLUGIN: &str = "Examples:
  sluice plugin info s3
  sluice plugin check s3://bucket/scratch                  # the conformance suite against a store
  sluice plugin export ./plugins";

pub const VERSION: &str = "Examples:
  sluice version -verbose";

/// The control-socket commands need `replicate` running with
/// `socket: {enabled: true}` in its config.
macro_rules! socket_note {
    () => {
        "They ask a `sluice replicate` whose config has `socket: {enabled: true, path: ...}`."
    };
}

pub const INFO: &str = concat!(
    "Examples:
  sluice info
  sluice info -json -socket /tmp/sluice.sock
",
    socket_note!()
);

pub const LIST: &str = concat!(
    "Examples:
  sluice list
  sluice list -json -socket /tmp/sluice.sock
",
    socket_note!()
);

pub const SYNC: &str = concat!(
    "Examples:
  sluice sync /var/lib/app/app.db
  sluice sync -wait /var/lib/app/app.db                     # until every replica has it
  sluice sync -wait -timeout 120 -json /var/lib/app/app.db
",
    socket_note!()
);

pub const START: &str = concat!(
    "Examples:
  sluice start /var/lib/app/app.db                          # after a `stop`
  sluice start -socket /tmp/sluice.sock -json /var/lib/app/app.db
",
    socket_note!()
);

pub const STOP: &str = concat!(
    "Examples:
  sluice stop /var/lib/app/app.db                           # final sync, then stop; stays registered
  sluice stop -timeout 10 -json /var/lib/app/app.db
",
    socket_note!()
);

pub const REGISTER: &str = concat!(
    "Examples:
  sluice register -replica s3://mybucket/db /path/to/db
  sluice register -replica file:///backup/path /path/to/db
  sluice register -socket /tmp/sluice.sock -json -replica s3://mybucket/db /path/to/db
",
    socket_note!()
);

pub const UNREGISTER: &str = concat!(
    "Examples:
  sluice unregister /path/to/db                             # final sync, then forget it
  sluice unregister -dry-run /path/to/db
  sluice unregister -timeout 10 -json /path/to/db
",
    socket_note!()
);

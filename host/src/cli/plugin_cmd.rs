//! `sluice plugin info|check|export`.

use crate::plugin::conformance::{self, Outcome};
use crate::plugin::{Labels, LoadedPlugin, PluginStore, Runtime, SandboxConfig, bundled, normalize_url};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Load `--plugin FILE` or the bundled plugin serving `url`.
pub async fn load_for(
    runtime: &Arc<Runtime>,
    plugin: Option<&Path>,
    url: Option<&str>,
) -> anyhow::Result<Arc<LoadedPlugin>> {
    match plugin {
        Some(path) => Ok(runtime.load_file(path).await?),
        None => {
            let url = url.unwrap_or("file:///");
            let name = bundled::for_url(url).with_context(|| {
                format!(
                    "no bundled plugin serves {}; pass --plugin FILE.wasm for this kind of store",
                    crate::plugin::redact_url(url)
                )
            })?;
            Ok(runtime.load_bundled(name).await?)
        }
    }
}

fn print_info(plugin: &LoadedPlugin, json: bool) -> anyhow::Result<()> {
    let info = plugin.info();
    let c = &info.capabilities;
    if json {
        let value = serde_json::json!({
            "name": info.name, "version": info.version, "description": info.description,
            "schemes": info.schemes, "needs_directory": info.needs_directory,
            "needs_sockets": info.needs_sockets, "source": plugin.source(),
            "contract": plugin.contract(),
            "settings": plugin.declared_settings().map(|s| s.iter().map(|s| serde_json::json!({
                "name": s.name, "description": s.description, "secret": s.secret, "required": s.required,
            })).collect::<Vec<_>>()),
            "capabilities": {
                "conditional_writes": c.conditional_writes, "ranged_reads": c.ranged_reads,
                "multipart_upload": c.multipart_upload, "max_object_size": c.max_object_size,
                "max_put_size": c.max_put_size, "min_part_size": c.min_part_size, "max_part_size": c.max_part_size,
                "max_parts": c.max_parts, "max_delete_batch": c.max_delete_batch, "max_list_page": c.max_list_page,
            }
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("name:              {}", info.name);
    println!("version:           {}", info.version);
    println!("description:       {}", info.description);
    println!("source:            {}", plugin.source());
    println!("schemes:           {}", info.schemes.join(", "));
    println!("needs directory:   {}", info.needs_directory);
    println!("needs sockets:     {}", info.needs_sockets);
    println!("conditional writes: {}", if c.conditional_writes { "yes" } else { "no" });
    println!("ranged reads:      {}", if c.ranged_reads { "yes" } else { "no" });
    println!("multipart upload:  {}", if c.multipart_upload { "yes" } else { "no" });
    let split = if c.multipart_upload { "" } else { " (sluice stores larger segments in parts)" };
    println!("max object size:   {}{split}", c.max_object_size.map_or("unlimited".into(), |v| v.to_string()));
    println!("max put size:      {}", c.max_put_size);
    println!("part size:         {}..={} bytes, at most {} parts", c.min_part_size, c.max_part_size, c.max_parts);
    println!("delete batch:      {}", c.max_delete_batch);
    println!("list page:         {}", c.max_list_page);
    println!("contract:          sluice:storage@{}", plugin.contract());
    print_settings(plugin.declared_settings());
    Ok(())
}

/// The settings a plugin declared, one a line, widest name first padded.
fn print_settings(declared: Option<&[crate::plugin::Setting]>) {
    let Some(declared) = declared else {
        println!("settings:          not declared (contract 0.1.0: the plugin is given every setting)");
        return;
    };
    if declared.is_empty() {
        println!("settings:          none");
        return;
    }
    println!("settings:");
    let width = declared.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in declared {
        let marks = [(s.required, "required"), (s.secret, "secret")];
        let marks: Vec<&str> = marks.iter().filter(|(on, _)| *on).map(|(_, m)| *m).collect();
        let marks = if marks.is_empty() { String::new() } else { format!(" ({})", marks.join(", ")) };
        println!("  {:width$}  {}{marks}", s.name, s.description);
    }
}

/// `sluice plugin info [PLUGIN.wasm | NAME]`.
pub async fn info(runtime: &Arc<Runtime>, plugin: &str, json: bool) -> anyhow::Result<()> {
    let loaded = if bundled::bytes(plugin).is_some() && !Path::new(plugin).exists() {
        runtime.load_bundled(plugin).await?
    } else {
        runtime.load_file(Path::new(plugin)).await?
    };
    print_info(&loaded, json)
}

/// `sluice plugin check [--plugin FILE] URL`: exit status says whether
/// every case passed.
pub async fn check(
    runtime: &Arc<Runtime>,
    plugin: Option<&Path>,
    url: &str,
    settings: Vec<(String, String)>,
    sandbox: &SandboxConfig,
) -> anyhow::Result<bool> {
    let url = normalize_url(url).with_context(|| format!("bad replica URL {}", crate::plugin::redact_url(url)))?;
    let shown = crate::plugin::redact_url(&url);
    let settings = with_environment_credentials(settings, &url)?;
    let loaded = load_for(runtime, plugin, Some(&url)).await?;
    let sb =
        sandbox.resolve(&loaded, &url, &settings).with_context(|| format!("cannot prepare the sandbox for {shown}"))?;
    let labels = Labels { plugin: String::new(), database: "-".into(), replica: shown.clone() };
    // The suite's first session learns what the store can do, and a store
    // that will not open is its first case's failure, said as one.
    let store = PluginStore::new(loaded.clone(), url.clone(), settings, sb, labels)?;
    println!("checking plugin `{}` {} against {shown}", loaded.info().name, loaded.info().version);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    conformance::run(&store, |case| match &case.outcome {
        Outcome::Pass => {
            passed += 1;
            println!("PASS  {}", case.name);
        }
        Outcome::Fail(why) => {
            failed += 1;
            let kind = if case.needed { "" } else { " (optional: replication works without it)" };
            println!("FAIL  {}{kind}: {why}", case.name);
        }
        Outcome::Skip(why) => {
            skipped += 1;
            println!("SKIP  {}: {why}", case.name);
        }
    })
    .await;
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    Ok(failed == 0)
}

/// `sluice plugin export DIR`: write the bundled plugins as `NAME.wasm`.
pub fn export(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for name in bundled::NAMES {
        let Some(bytes) = bundled::bytes(name) else { bail!("bundled plugin {name} missing") };
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `-s` settings, plus credentials from where `replicate` finds them (the
/// environment, the shared credentials file) unless `-s` gives a key.
fn with_environment_credentials(
    mut settings: Vec<(String, String)>,
    url: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let scheme = url.split_once("://").map_or("file", |(s, _)| s);
    if matches!(scheme, "abs" | "gs" | "oss" | "sftp" | "nats") {
        crate::config::credentials::store_from_environment(scheme, url, &mut settings)?;
        return Ok(settings);
    }
    if settings.iter().any(|(k, _)| k == "access-key-id") {
        return Ok(settings);
    }
    if let Some(c) = crate::config::credentials::from_environment()? {
        settings.push(("access-key-id".into(), c.access_key_id));
        let rest = [("secret-access-key", c.secret_access_key), ("session-token", c.session_token)];
        settings.extend(rest.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))));
    }
    Ok(settings)
}
